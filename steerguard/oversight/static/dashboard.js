// The dashboard's only script: charts from JSON blocks, and the live view's event stream.
// Text from records is inserted with textContent only: a record may hold hostile markup.
"use strict";

const PALETTE = ["#2563eb", "#dc2626", "#9333ea", "#059669", "#d97706", "#0891b2",
                 "#db2777", "#4b5563", "#65a30d", "#7c3aed"];

function chart(el) {
  const spec = JSON.parse(document.getElementById(el.dataset.chart).textContent);
  const byLayer = spec.xlabel === "layer";
  const series = [{label: byLayer ? "layer" : "time"}];
  spec.series.forEach((s, i) => series.push({
    label: s.label, stroke: PALETTE[i % PALETTE.length], width: 2,
    points: {show: byLayer || spec.x.length < 60},
  }));
  const opts = {
    width: Math.max(280, el.clientWidth || 600), height: byLayer ? 200 : 220,
    series: series,
    scales: {x: {time: !byLayer}},
    axes: [byLayer ? {label: "layer", incrs: [1], values: (u, vals) => vals.map(String)}
                   : {}, {}],
  };
  const data = [spec.x].concat(spec.series.map((s) => s.values));
  el.textContent = "";
  new uPlot(opts, data, el);  // eslint-disable-line no-new
  el.dataset.rendered = "1";
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function link(td, href, text) {
  td.textContent = "";
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  td.appendChild(a);
}

function liveRow(r) {
  const tr = document.createElement("tr");
  tr.className = "kind-" + r.kind;
  tr.dataset.decision = r.decision_id;
  cell(tr, r.time, "nowrap");
  cell(tr, r.kind);
  link(cell(tr, ""), "/dashboard/decisions/" + encodeURIComponent(r.decision_id),
       r.decision_id.slice(0, 12));
  const s = cell(tr, "");
  if (r.session_id) link(s, "/dashboard/session?id=" + encodeURIComponent(r.session_id),
                         r.session_id.slice(0, 20));
  const u = cell(tr, "");
  if (r.user_ref) link(u, "/dashboard/user?ref=" + encodeURIComponent(r.user_ref),
                       r.user_ref.slice(0, 12));
  cell(tr, r.outcome + (r.error_type ? " (" + r.error_type + ")" : ""), "outcome");
  cell(tr, r.kind === "intervention" ? r.vector + " " + r.rules : r.rules);
  cell(tr, r.strength, "num");
  cell(tr, r.layers);
  cell(tr, r.mean_delta_norm, "num");
  return tr;
}

function live(tbody) {
  const status = document.getElementById("live-status");
  const source = new EventSource(tbody.dataset.source);
  source.onopen = () => { status.textContent = "connected"; status.className = "status ok"; };
  source.onerror = () => { status.textContent = "reconnecting…"; status.className = "status"; };
  source.addEventListener("problem", (ev) => {
    status.textContent = JSON.parse(ev.data).detail;
    status.className = "status warn";
  });
  source.addEventListener("record", (ev) => {
    tbody.insertBefore(liveRow(JSON.parse(ev.data)), tbody.firstChild);
    while (tbody.rows.length > 200) tbody.deleteRow(-1);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll(".plot[data-chart]").forEach(chart);
  const rows = document.getElementById("live-rows");
  if (rows) live(rows);
});
