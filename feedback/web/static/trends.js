// The dashboard's "Service trends": draws GET /api/trends?window=1h|1d (feedback/monitoring/trends.py) for
// the predictor and the app: request rate, error rate (%), latency p50/p99 (ms) over time, uptime as text.
// Loaded after dashboard.js and uses its byTestId, element and chart. Time axes read UTC, like the
// per-day chart. Everything is built with textContent: no markup from data.
"use strict";

const TRENDS_POLL_MS = 30000;
const TREND_SERVICES = { predictor: "predictor", app: "app" };
const WINDOW_WORDS = { "1h": "hour", "1d": "day" };
let trendsWindow = "1h";
let trendsAsked = 0; // answers to an older question (the window switched since) are dropped

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "unknown";
  const s = Math.max(0, Math.round(seconds));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} min`;
  return m ? `${m} min ${s % 60} s` : `${s} s`;
}

function every(seconds) {
  return seconds % 3600 === 0 ? `${seconds / 3600} h` : seconds % 60 === 0 ? `${seconds / 60} min` : `${seconds} s`;
}

// unix seconds -> "YYYY-MM-DDTHH:MM:SS.sss" in UTC, which plotly draws as given
const utc = (t) => new Date(t * 1000).toISOString().slice(0, -1);

function trendLayout(answer, yaxis, legend) {
  return {
    height: 170, margin: { t: 8, r: 15, b: 42, l: 58 }, showlegend: Boolean(legend),
    xaxis: { type: "date", range: [utc(answer.now - answer.window_s), utc(answer.now)], title: { text: "time (UTC)", standoff: 4 },
             hoverformat: "%b %d %H:%M UTC" },
    yaxis: { rangemode: "tozero", ...yaxis },
  };
}

function sourceText(answer) {
  const points = `a point every ${every(answer.step_s)}`;
  if (answer.source === "prometheus") {
    return `From Prometheus at ${answer.prometheus_url} (its 5-minute recording rules), ${points}.`;
  }
  return `From the app's own scrapes every ${every(answer.interval_s)} (kept in this app's memory for a day; ` +
    `each replica has its own), ${points}.`;
}

function drawService(answer, service) {
  const trend = answer.services[service];
  const points = trend.points;
  const word = WINDOW_WORDS[answer.window];
  byTestId(`uptime-${service}`).textContent = duration(trend.uptime_s);
  showError(`trends-error-${service}`, trend.error && (answer.source === "prometheus"
    ? `Prometheus could not answer for the ${TREND_SERVICES[service]}: ${trend.error}`
    : `The last scrape of its /metrics failed: ${trend.error}`));
  const requests = points.some((p) => p.rate > 0);
  let note = "";
  if (!points.length && trend.error) {
    note = ""; // the error says why
  } else if (!points.length) {
    note = answer.source === "memory"
      ? (answer.step_s > answer.interval_s
        ? `Collecting: first points after 2 scrapes ${every(answer.step_s)} apart (the app scrapes every ${every(answer.interval_s)}).`
        : `Collecting: first points after 2 scrapes (one every ${every(answer.interval_s)}).`)
      : `No data from Prometheus in the last ${word}.`;
  } else if (!requests) {
    note = `No requests in the last ${word}.`;
  }
  const empty = byTestId(`trends-empty-${service}`);
  empty.textContent = note;
  empty.hidden = !note;
  const x = points.map((p) => utc(p.t));
  const line = (name, y, colour, unit) => ({
    type: "scatter", mode: "lines+markers", name, x, y, line: { color: colour, width: 2 }, marker: { size: 4 },
    hovertemplate: `%{x}: %{y:.3~f} ${unit}<extra>${name}</extra>`,
  });
  trendChart(`chart-trend-${service}-rate`, points.length && [
    line("requests / s", points.map((p) => p.rate), COLOURS.accent, "requests/s"),
  ], trendLayout(answer, { title: { text: "requests / s" } }));
  trendChart(`chart-trend-${service}-errors`, requests && [
    line("errors", points.map((p) => (p.error_ratio === null ? null : 100 * p.error_ratio)), "#c0392b", "%"),
  ], trendLayout(answer, { title: { text: "errors (%)" }, ticksuffix: "%" }));
  trendChart(`chart-trend-${service}-latency`, requests && [
    line("p50", points.map((p) => (p.p50_s === null ? null : 1000 * p.p50_s)), COLOURS.confirmed, "ms"),
    line("p99", points.map((p) => (p.p99_s === null ? null : 1000 * p.p99_s)), COLOURS.corrected, "ms"),
  ], { ...trendLayout(answer, { title: { text: "latency (ms)" } }, true),
       legend: { orientation: "h", x: 1, xanchor: "right", y: 1, yanchor: "bottom" } });
}

// A chart with nothing to draw is hidden: the service's note (or error) above says why.
function trendChart(testId, traces, extraLayout) {
  const slot = byTestId(testId);
  slot.hidden = !traces;
  if (traces) chart(testId, traces, extraLayout);
  else Plotly.purge(slot);
}

async function refreshTrends() {
  const asked = ++trendsAsked;
  const chosen = trendsWindow;
  try {
    const response = await fetch(`/api/trends?window=${encodeURIComponent(chosen)}`);
    if (!response.ok) throw new Error(await errorText(response));
    const answer = await response.json();
    if (asked !== trendsAsked) return;
    byTestId("trends-source").textContent = sourceText(answer);
    showError("trends-load-error", "");
    for (const service of Object.keys(TREND_SERVICES)) drawService(answer, service);
    byTestId("trends-panel").dataset.window = answer.window; // drawn: what the tests wait for
  } catch (error) {
    if (asked === trendsAsked) showError("trends-load-error", `The trends could not be loaded: ${error.message}`);
  }
}

function chooseWindow(chosen) {
  trendsWindow = chosen;
  for (const button of byTestId("trends-switch").querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(button.dataset.window === chosen));
  }
  byTestId("trends-json").href = `/api/trends?window=${encodeURIComponent(chosen)}`;
  refreshTrends();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of byTestId("trends-switch").querySelectorAll("button")) {
    button.addEventListener("click", () => chooseWindow(button.dataset.window));
  }
  refreshTrends();
  setInterval(refreshTrends, TRENDS_POLL_MS);
});
