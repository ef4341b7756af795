// The dashboard: draws GET /api/dashboard with plotly.js (served by the app) and keeps the runs table
// live from GET /api/runs. Retrain and Stop post with app.js's writeFetch (it sends the token when
// the app has one) and show its errorText. Everything is built with textContent: no markup from data.
"use strict";

const RUNS_POLL_MS = 4000;
const DASHBOARD_POLL_MS = 30000;
const PLOT_CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["select2d", "lasso2d"] };
const COLOURS = { confirmed: "#1d8a4a", corrected: "#b45309", accent: "#2f6fde", muted: "#9aa5b5" };
let activeRunId = null;

const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);
const num = (v, digits = 4) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
const versionName = (v) => (v === null || v === undefined ? "unknown" : /^\d+$/.test(v) ? `v${v}` : String(v));
const pct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)}%`);
const when = (iso) => (iso ? new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" }) : "–");

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function cells(values) {
  return values.map((value) => {
    const td = document.createElement("td");
    if (value instanceof Node) td.append(value);
    else td.textContent = value === null || value === undefined ? "–" : String(value);
    return td;
  });
}

function row(values) {
  const tr = document.createElement("tr");
  tr.append(...cells(values));
  return tr;
}

function showError(testId, message) {
  const node = byTestId(testId);
  node.textContent = message || "";
  node.hidden = !message;
}

function layout(extra) {
  return {
    margin: { t: 30, r: 25, b: 55, l: 50 }, height: 260, font: { family: "system-ui, sans-serif", size: 12 },
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" }, ...extra,
  };
}

// Draws the traces, or says why there is nothing to draw.
function chart(testId, traces, extraLayout, emptyText) {
  const slot = byTestId(testId);
  if (!traces) {
    Plotly.purge(slot);
    slot.replaceChildren(element("p", emptyText, "empty"));
    return;
  }
  if (!slot.classList.contains("js-plotly-plot")) slot.replaceChildren();
  Plotly.react(slot, traces, layout(extraLayout), PLOT_CONFIG);
}

const DAY_MS = 86400000;

// The per-day chart's x axis: UTC dates (the API's "YYYY-MM-DD", which plotly reads as midnight),
// at least the last week shown, labelled with the date on whole days: every day up to two weeks,
// then every week (counted back from the last day) up to ten, then every month; half a day of room
// on each side. plotly's own ticks for a short date range fall on hours and milliseconds: a single
// day used to read "23:59:59.9996".
function dayAxis(dates) {
  const last = Date.parse(dates[dates.length - 1]), first = Math.min(Date.parse(dates[0]), last - 6 * DAY_MS);
  const span = Math.round((last - first) / DAY_MS) + 1;
  const lastDay = dates[dates.length - 1];
  const ticks = span <= 14 ? { dtick: DAY_MS, tick0: lastDay } : span <= 70 ? { dtick: 7 * DAY_MS, tick0: lastDay }
    : { dtick: "M1" };
  return { type: "date", tickformat: "%b %d", ...ticks, range: [first - DAY_MS / 2, last + DAY_MS / 2] };
}

// A y axis of counts: whole numbers only (plotly's own ticks for a few counts are 0, 0.5, 1, 1.5).
function countAxis(values) {
  return { rangemode: "tozero", tickformat: "d", ...(Math.max(0, ...values) <= 6 ? { dtick: 1 } : {}) };
}

function binLabels(edges) {
  return edges.slice(0, -1).map((low, i) => `${low.toFixed(2)}–${edges[i + 1].toFixed(2)}`);
}

function drawChampion(data) {
  const champion = data.champion;
  byTestId("champion-none").hidden = Boolean(champion);
  byTestId("champion-details").hidden = !champion;
  if (champion) {
    byTestId("champion-version").textContent = champion.version;
    byTestId("champion-promoted").textContent = when(champion.promoted_at);
    const m = champion.metrics || {};
    byTestId("champion-metrics").replaceChildren(
      ...cells([num(m.accuracy), num(m.precision), num(m.recall), num(m.f1), num(m.auc), m.n]));
    byTestId("champion-source").textContent = champion.metrics_source
      ? `test metrics from ${champion.metrics_source}` : "this version has no test metrics";
  }
  const matrix = champion && champion.confusion_matrix;
  const names = (champion && champion.class_names) || [];
  chart("chart-confusion", matrix && [{
    // gaps between the cells: without them plotly.js draws the cells as one image with a style
    // attribute, which this page's CSP (style-src 'self') refuses
    type: "heatmap", z: matrix, x: names, y: names, xgap: 2, ygap: 2, colorscale: "Blues", reversescale: true, showscale: false,
    texttemplate: "%{z}", hovertemplate: "true %{y}, predicted %{x}: %{z}<extra></extra>",
  }], { xaxis: { title: { text: "predicted" } }, yaxis: { title: { text: "true" }, autorange: "reversed" },
        height: 220 }, "No confusion matrix: the champion has no evaluation.json.");
}

function drawPredictor(predictor) {
  byTestId("latency-p50").textContent = predictor.available ? `${num(1000 * predictor.p50_s, 1)} ms` : "unavailable";
  byTestId("latency-p99").textContent = predictor.available ? `${num(1000 * predictor.p99_s, 1)} ms` : "unavailable";
  const rate = predictor.request_rate_per_s;
  byTestId("request-rate").textContent = !predictor.available ? "unavailable" : rate === null ? "–" : num(rate, 2);
  byTestId("predictor-note").textContent = !predictor.available ? predictor.reason
    : `${predictor.requests_total} requests since it started; read ${when(predictor.scraped_at)}` +
      (rate === null ? " (the rate needs a second read)" : ` (rate over the last ${num(predictor.rate_window_s, 0)} s)`);
}

function drawDrift(drift, recent) {
  const status = byTestId("drift-status");
  status.textContent = drift.status;
  status.className = `flag ${drift.status.replaceAll(" ", "-")}`;
  byTestId("drift-figures").textContent = drift.statistic === null
    ? `${drift.n_recent} recent predictions, ${drift.n_reference} test confidences (the test needs ${drift.min_n} of each)`
    : `D = ${num(drift.statistic, 3)}, p = ${Number(drift.p_value).toPrecision(3)} (${drift.n_recent} recent of ` +
      `version ${recent.model_version}, ${drift.n_reference} test photos)`;
  const h = drift.histogram;
  const x = binLabels(h.edges);
  const traces = [];
  if (h.recent) traces.push({ type: "bar", name: "recent predictions", x, y: h.recent, marker: { color: COLOURS.accent } });
  if (h.reference) traces.push({ type: "bar", name: "test split", x, y: h.reference, marker: { color: COLOURS.muted } });
  chart("chart-drift", traces.length ? traces : null, { barmode: "group", height: 220, yaxis: { tickformat: ".0%" } },
        "No confidences to compare yet.");
}

function drawCharts(data) {
  const days = data.predictions_per_day;
  chart("chart-per-day", days.length ? [{
    type: "bar", x: days.map((d) => d.date), y: days.map((d) => d.count), width: 0.8 * DAY_MS,
    marker: { color: COLOURS.accent }, xhoverformat: "%b %d, %Y", hovertemplate: "%{x}: %{y} predictions<extra></extra>",
  }] : null, days.length ? { xaxis: dayAxis(days.map((d) => d.date)), yaxis: countAxis(days.map((d) => d.count)) } : {},
  "No prediction yet.");

  const acc = data.validated_accuracy;
  chart("chart-accuracy", acc.length ? [{
    type: "scatter", mode: "markers", x: acc.map((a) => versionName(a.model_version)), y: acc.map((a) => a.accuracy),
    error_y: { type: "data", symmetric: false, array: acc.map((a) => a.ci_high - a.accuracy),
               arrayminus: acc.map((a) => a.accuracy - a.ci_low) },
    marker: { size: 10, color: COLOURS.accent }, customdata: acc.map((a) => [a.n, a.corrected, a.correction_rate]),
    hovertemplate: "%{x}: %{y:.1%} of %{customdata[0]} validated; %{customdata[1]} corrected " +
                   "(%{customdata[2]:.1%})<extra></extra>",
  }] : null, { yaxis: { range: [0, 1.05], tickformat: ".0%" }, xaxis: { type: "category" } },
  "No verdict yet: confirm or correct predictions on the upload or review page.");
  byTestId("accuracy-table").replaceChildren(...acc.map((a) => {
    const tr = row([versionName(a.model_version), a.n, pct(a.accuracy), `${pct(a.ci_low)} – ${pct(a.ci_high)}`,
                    pct(a.correction_rate)]);
    tr.setAttribute("data-testid", "accuracy-row");
    return tr;
  }));

  drawNeither(data.neither);

  const hist = data.confidence_histogram;
  const validated = hist.confirmed.some(Boolean) || hist.corrected.some(Boolean);
  const x = binLabels(hist.edges);
  chart("chart-confidence", validated ? [
    { type: "bar", name: "confirmed", x, y: hist.confirmed, marker: { color: COLOURS.confirmed } },
    { type: "bar", name: "corrected", x, y: hist.corrected, marker: { color: COLOURS.corrected } },
  ] : null, { barmode: "stack", xaxis: { title: { text: "confidence" } },
               yaxis: countAxis(hist.confirmed.map((c, i) => c + hist.corrected[i])) }, "No validated prediction yet.");

  const balance = data.class_balance;
  const traces = [];
  if (balance.predicted_shares) {
    traces.push({ type: "bar", name: `predicted (${balance.n} newest)`, x: balance.labels,
                  y: balance.labels.map((l) => balance.predicted_shares[l]), marker: { color: COLOURS.accent } });
  }
  if (balance.training_shares) {
    traces.push({ type: "bar", name: "training split", x: balance.labels,
                  y: balance.labels.map((l) => balance.training_shares[l]), marker: { color: COLOURS.muted } });
  }
  chart("chart-balance", traces.length ? traces : null, { barmode: "group", yaxis: { tickformat: ".0%" } },
        "No champion prediction and no training counts yet.");

  const scored = data.versions.filter((v) => v.metrics);
  chart("chart-versions", scored.length ? ["accuracy", "f1", "auc"].map((key) => ({
    type: "scatter", mode: "lines+markers", name: key, x: scored.map((v) => `v${v.version}`),
    y: scored.map((v) => v.metrics[key]),
  })) : null, { xaxis: { type: "category" }, yaxis: { tickformat: ".2f" } }, "No version with test metrics yet.");
}

// Per model version: the share flagged by the model and the share people called neither.
function drawNeither(rows) {
  const x = rows.map((r) => versionName(r.model_version));
  const shown = rows.some((r) => r.flagged_share !== null || r.neither_share !== null);
  chart("chart-neither", shown ? [
    { type: "bar", name: "flagged by the model", x, y: rows.map((r) => r.flagged_share), marker: { color: COLOURS.corrected },
      customdata: rows.map((r) => [r.flagged, r.scored]), hovertemplate: "%{x}: %{y:.1%} (%{customdata[0]} of %{customdata[1]})<extra></extra>" },
    { type: "bar", name: "people said neither", x, y: rows.map((r) => r.neither_share), marker: { color: COLOURS.muted },
      customdata: rows.map((r) => [r.neither, r.validated]), hovertemplate: "%{x}: %{y:.1%} (%{customdata[0]} of %{customdata[1]})<extra></extra>" },
  ] : null, { barmode: "group", height: 220, xaxis: { type: "category" }, yaxis: { tickformat: ".0%", rangemode: "tozero" } },
  "No out-of-distribution score and no verdict of neither yet.");
  const share = (count, total, value) => (value === null ? "–" : `${pct(value)} (${count} of ${total})`);
  byTestId("neither-table").replaceChildren(...rows.map((r) => {
    const tr = row([versionName(r.model_version), r.predictions, share(r.flagged, r.scored, r.flagged_share), r.validated,
                    share(r.neither, r.validated, r.neither_share), r.flagged_neither]);
    tr.setAttribute("data-testid", "neither-row");
    return tr;
  }));
}

function confusionTable(version) {
  if (!version.confusion_matrix) return element("span", "–");
  const table = element("table", null, "mini");
  const names = version.class_names || [];
  const head = document.createElement("tr");
  head.append(element("th", "true \\ pred"), ...names.map((n) => element("th", n)));
  table.append(head);
  version.confusion_matrix.forEach((counts, i) => {
    const tr = document.createElement("tr");
    tr.append(element("th", names[i]), ...counts.map((c) => element("td", c)));
    table.append(tr);
  });
  return table;
}

function decisionCell(decision) {
  if (!decision) return element("span", "no decision recorded");
  const cell = element("div");
  cell.append(element("strong", decision.promoted ? "promoted" : "not promoted",
                      decision.promoted ? "ok" : "warn"));
  cell.append(element("div", decision.reason, "reason"));
  if (decision.decided_at) cell.append(element("div", when(decision.decided_at), "hint"));
  return cell;
}

function drawVersions(versions) {
  const body = byTestId("versions");
  body.replaceChildren(...[...versions].reverse().map((v) => {
    const m = v.metrics || {};
    const name = element("span", `v${v.version}`);
    if (v.is_champion) name.append(" ", element("span", "champion", "badge"));
    const tr = row([name, when(v.registered_at), num(m.accuracy), num(m.precision), num(m.recall), num(m.f1),
                    num(m.auc), m.n, confusionTable(v), decisionCell(v.decision)]);
    tr.setAttribute("data-testid", "version-row");
    tr.dataset.version = v.version;
    return tr;
  }));
  byTestId("versions-empty").hidden = versions.length > 0;
}

async function refreshDashboard() {
  try {
    const response = await fetch("/api/dashboard");
    if (!response.ok) throw new Error(await errorText(response));
    const data = await response.json();
    byTestId("dashboard-updated").textContent = when(data.generated_at);
    byTestId("registry-uri").textContent = data.registry.uri;
    showError("dashboard-error", data.registry.error && `The registry cannot be read: ${data.registry.error}`);
    drawChampion(data);
    drawPredictor(data.predictor);
    drawDrift(data.drift, data.recent);
    drawCharts(data);
    drawVersions(data.versions);
    drawAgreement(data.agreement); // agreement.js
  } catch (error) {
    showError("dashboard-error", `The dashboard's numbers could not be loaded: ${error.message}`);
  }
}

// -- runs ------------------------------------------------------------------------------------
function progress(run) {
  if (run.step && run.state === "failed") return `failed in step ${run.steps_done + 1}/${run.steps_total}: ${run.step}`;
  if (run.step) return `step ${run.steps_done + 1}/${run.steps_total}: ${run.step}`;
  return `${run.steps_done}/${run.steps_total} steps`;
}

function runRow(run, active) {
  const state = element("span", run.state, `state ${run.state}`);
  const details = element("div");
  if (run.console_url) {
    const link = element("a", "console");
    link.href = run.console_url;
    link.rel = "noopener";
    link.target = "_blank";
    details.append(link);
  } else {
    const link = element("a", "log"); // plain text (GET /api/runs/{id}/log), not the run's JSON
    link.href = `/api/runs/${encodeURIComponent(run.id)}/log`;
    link.target = "_blank";
    link.setAttribute("data-testid", "run-log");
    details.append(link);
  }
  if (run.reason) details.append(element("div", run.reason, "reason"));
  const actions = element("div");
  if (run.id === active) {
    const stop = element("button", run.cancel_requested ? "Stopping…" : "Stop", "secondary");
    stop.type = "button";
    stop.disabled = run.cancel_requested;
    stop.setAttribute("data-testid", "stop-run");
    stop.addEventListener("click", () => stopRun(run.id, stop));
    actions.append(stop);
  }
  const promoted = run.promoted === null ? "–" : run.promoted ? "yes" : "no";
  const tr = row([when(run.started_at || run.created_at), run.target, run.trigger, state, progress(run), promoted,
                  run.version === null ? "–" : `v${run.version}`, details, actions]);
  tr.setAttribute("data-testid", "run-row");
  tr.dataset.runId = run.id;
  tr.dataset.state = run.state;
  return tr;
}

async function refreshRuns() {
  try {
    const response = await fetch("/api/runs?limit=20");
    if (!response.ok) throw new Error(await errorText(response));
    const { runs, active } = await response.json();
    byTestId("runs").replaceChildren(...runs.map((run) => runRow(run, active)));
    byTestId("runs-empty").hidden = runs.length > 0;
    byTestId("retrain").disabled = Boolean(active);
    if (activeRunId && activeRunId !== active) refreshDashboard(); // a run ended: a new version, maybe a champion
    activeRunId = active;
  } catch (error) {
    showError("retrain-error", `The runs could not be loaded: ${error.message}`);
  }
}

async function retrain(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const select = form.querySelector("select[name=target]");
  const button = byTestId("retrain");
  button.disabled = true;
  showError("retrain-error", "");
  try {
    const response = await writeFetch("/api/retrain", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ target: select ? select.value : form.dataset.defaultTarget || null, parameters: {} }),
    });
    if (!response.ok) {
      const detail = await errorText(response);
      throw new Error(response.status === 409 ? `Not started: ${detail}` : detail);
    }
  } catch (error) {
    showError("retrain-error", error.message);
  }
  await refreshRuns();
}

async function stopRun(id, button) {
  button.disabled = true;
  showError("retrain-error", "");
  try {
    const response = await writeFetch(`/api/runs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
    if (!response.ok) throw new Error(await errorText(response));
  } catch (error) {
    showError("retrain-error", error.message);
  }
  await refreshRuns();
}

document.addEventListener("DOMContentLoaded", () => {
  byTestId("retrain-form").addEventListener("submit", retrain);
  refreshDashboard();
  refreshRuns();
  setInterval(refreshRuns, RUNS_POLL_MS);
  setInterval(refreshDashboard, DASHBOARD_POLL_MS);
});
