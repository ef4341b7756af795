// The dashboard's "Agreement between reviewers" panel: draws GET /api/dashboard's `agreement`
// (feedback/monitoring/agreement.py); dashboard.js calls drawAgreement with it on every refresh.
// Built with textContent only: reviewer names are people's input.
"use strict";

function drawAgreement(agreement) {
  const find = (id) => document.querySelector(`[data-testid="${id}"]`);
  const percent = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)}%`);
  find("agreement-alpha").textContent = agreement.alpha === null ? "–" : Number(agreement.alpha).toFixed(3);
  const note = find("agreement-alpha-note");
  note.textContent = agreement.alpha_note || "";
  note.hidden = !agreement.alpha_note;
  find("agreement-percent").textContent = agreement.percent_agreement === null ? "–"
    : `${percent(agreement.percent_agreement)} of ${agreement.pairs} pair${agreement.pairs === 1 ? "" : "s"}`;
  find("agreement-shared").textContent = `${agreement.shared_photos} of ${agreement.photos}`;
  find("agreement-contested").textContent = String(agreement.contested);
  find("agreement-unresolved").textContent = String(agreement.unresolved);
  find("agreement-reviewers").replaceChildren(...agreement.reviewers.map((r) => {
    const tr = document.createElement("tr");
    tr.setAttribute("data-testid", "agreement-row");
    const shown = r.agreement === null ? "–" : `${percent(r.agreement)} (${r.agreed} of ${r.compared})`;
    for (const value of [r.reviewer, r.judged, shown]) {
      const td = document.createElement("td");
      td.textContent = String(value);
      tr.append(td);
    }
    return tr;
  }));
  find("agreement-empty").hidden = agreement.reviewers.length > 0;
}
