// The household's page: fetches /api/overview (the published warehouse) and /api/today
// (InfluxDB), fills the numbers and embeds the Vega-Lite charts the server built.
"use strict";

const OVERVIEW_EVERY_MS = 60000;
const LIVE_EVERY_MS = 30000;
const dark = window.matchMedia("(prefers-color-scheme: dark)");
const params = new URLSearchParams(location.search);
let source = params.get("source");

const formats = {
  kwh: (v) => v.toFixed(2) + " kWh",
  yen: (v) => "¥" + Math.round(v).toLocaleString("en-US"),
  w: (v) => Math.round(v).toLocaleString("en-US") + " W",
  wday: (v) => (v >= 0 ? "+" : "") + v.toFixed(1) + " W/day",
  int: (v) => String(v),
  date: (v) => v,
  percent: (v) => (v > 0 ? v + "% more than usual" : v < 0 ? -v + "% less than usual" : "as usual"),
};

function setField(name, value) {
  for (const el of document.querySelectorAll(`[data-field="${name}"]`)) {
    const missing = value === null || value === undefined;
    el.dataset.value = missing ? "" : String(value);
    el.textContent = missing ? "–" : formats[el.dataset.kind](value);
  }
}

function setFields(prefix, row) {
  for (const el of document.querySelectorAll(`[data-field^="${prefix}."]`)) {
    const key = el.dataset.field.slice(prefix.length + 1);
    if (key in (row || {})) setField(el.dataset.field, row[key]);
  }
}

function showSection(name, present) {
  for (const el of document.querySelectorAll(`[data-section="${name}"]`)) el.hidden = !present;
  for (const el of document.querySelectorAll(`[data-missing="${name}"]`)) el.hidden = present;
}

function showState(el, message) {
  el.textContent = message || "";
  el.hidden = !message;
}

async function fetchJson(url) {
  const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (response.status === 401) {
    location.assign("/login");
    return null;
  }
  const body = await response.json();
  return { ok: response.ok, status: response.status, body };
}

async function embed(id, spec) {
  const el = document.getElementById(id);
  if (!spec) {
    el.replaceChildren();
    return;
  }
  const options = { actions: false, renderer: "svg" };
  if (dark.matches) options.theme = "dark";
  await vegaEmbed(el, spec, options);
}

function usualPercent(day) {
  if (!day || !day.usual_kwh) return null;
  return Math.round((100 * (day.energy_kwh - day.usual_kwh)) / day.usual_kwh);
}

function renderFindings(findings) {
  const list = document.getElementById("findings");
  list.replaceChildren();
  showSection("findings", findings !== null);
  if (findings === null) return;
  if (findings.length === 0) {
    const li = document.createElement("li");
    li.textContent = "Nothing unusual in the last 7 days.";
    list.append(li);
  }
  for (const f of findings) {
    const li = document.createElement("li");
    li.className = "finding";
    li.dataset.kind = f.kind;
    li.dataset.date = f.date_jst;
    const when = document.createElement("strong");
    when.textContent = `${f.date_jst} (${f.kind.replaceAll("_", " ")}): `;
    const reason = document.createElement("span");
    reason.className = "reason";
    reason.textContent = f.reason;
    li.append(when, reason);
    list.append(li);
  }
}

function renderLink(id, href) {
  const a = document.getElementById(id);
  a.hidden = !href;
  if (href) a.href = href;
}

function renderSources(sources) {
  const select = document.getElementById("source");
  if (select.options.length === sources.length) return;
  select.replaceChildren(...sources.map((s) => new Option(s, s, false, s === source)));
}

function forSource(path) {
  return path + (source ? "?source=" + encodeURIComponent(source) : "");
}

async function loadOverview() {
  const result = await fetchJson(forSource("/api/overview"));
  if (!result) return;
  const warehouse = document.getElementById("warehouse");
  if (!result.ok) {
    const message = result.body.message || result.body.detail || "The data cannot be read.";
    showState(document.getElementById("state"), message);
    document.body.dataset.state = result.body.state || "error";
    warehouse.hidden = true;
    return;
  }
  const o = result.body;
  source = o.source;
  renderSources(o.sources);
  showState(document.getElementById("state"), "");
  document.body.dataset.state = "ok";
  warehouse.hidden = false;
  showState(
    document.getElementById("stale"),
    o.age_days > 0
      ? `The newest data is from ${o.newest_day}, ${o.age_days} day(s) older than yesterday: ` +
          "the nightly pipeline may not have run."
      : "",
  );
  setField("date", o.date);
  showSection("day", o.day !== null);
  setFields("day", o.day);
  setField("day.vs_usual", usualPercent(o.day));
  showSection("billing", o.billing !== null);
  setFields("billing", o.billing);
  showSection("forecast", !!(o.forecast && o.forecast.length));
  const base = o.base_load && o.base_load.length ? o.base_load[o.base_load.length - 1] : null;
  showSection("base_load", base !== null);
  setFields("base", base);
  renderFindings(o.findings);
  renderLink("report-daily", o.reports.daily);
  renderLink("report-period", o.reports.period);
  await Promise.all([
    embed("chart-profile", o.charts.profile),
    embed("chart-days", o.charts.days),
    embed("chart-base", o.charts.base_load),
  ]);
}

async function loadLive() {
  const result = await fetchJson(forSource("/api/today"));
  if (!result) return;
  const note = document.getElementById("live-note");
  if (!result.ok) {
    setField("live.instant_power_w", null);
    note.textContent = "Live power is unavailable: " + (result.body.detail || "InfluxDB did not answer.");
    return;
  }
  const latest = result.body.latest;
  setField("live.instant_power_w", latest ? latest.instant_power_w : null);
  note.textContent = latest ? "Last reading at " + new Date(latest.time).toLocaleTimeString() : "No readings yet.";
  await embed("chart-today", result.body.chart);
}

async function refresh() {
  document.body.dataset.ready = "";
  try {
    await loadOverview();
    await loadLive();
  } finally {
    document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
    // Milliseconds from navigation to the numbers and charts drawn (read by scripts/bench_page.py).
    document.body.dataset.renderedMs = String(Math.round(performance.now()));
    document.body.dataset.ready = "1";
  }
}

document.getElementById("source").addEventListener("change", (event) => {
  location.search = "?source=" + encodeURIComponent(event.target.value);
});
document.getElementById("refresh").addEventListener("click", refresh);
dark.addEventListener("change", refresh);
setInterval(loadOverview, OVERVIEW_EVERY_MS);
setInterval(loadLive, LIVE_EVERY_MS);
refresh();
