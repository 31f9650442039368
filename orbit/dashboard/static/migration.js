// The migration page, live: polls the progress JSON every second (no page reload), updates
// the numbers and the operator controls, and redraws the chart. Stops once the migration
// is over. Every number arrives formatted by the server; this only places it.

import { drawChart } from "./chart.js";

const section = document.getElementById("migration");
const svg = document.getElementById("chart");
const note = document.querySelector("[data-live-note]");
const url = section.dataset.progressUrl;
const intervalMs = Number(section.dataset.pollIntervalMs) || 1000;
const samples = [];
let switchAtS = svg.dataset.switchAt === "" ? null : Number(svg.dataset.switchAt);
let totalBytes = 0;
let completedAtS = null;

function draw() {
  drawChart(svg, samples, switchAtS, totalBytes, completedAtS);
}

function renderDecisions(decisions) {
  const list = document.querySelector("[data-decisions]");
  if (!list || decisions.length === 0 || list.dataset.count === String(decisions.length)) return;
  list.dataset.count = String(decisions.length);
  list.replaceChildren(
    ...decisions.map((d) => {
      const item = document.createElement("li");
      const at = document.createElement("span");
      at.className = "at";
      at.textContent = d.at;
      const action = document.createElement("strong");
      action.textContent = d.label || d.action;
      item.append(at, " ", action, `: ${d.reason}`);
      return item;
    }),
  );
}

function render(m) {
  for (const [field, text] of Object.entries(m.text)) {
    for (const el of document.querySelectorAll(`[data-field="${field}"]`)) el.textContent = text;
  }
  for (const badge of document.querySelectorAll("[data-phase]")) {
    badge.dataset.phase = m.status;
    badge.className = `badge phase-${m.status}`;
  }
  const error = document.querySelector('[data-field="error"]');
  if (error) error.hidden = m.text.error === "";
  const meter = document.querySelector('[data-meter="progress"]');
  if (meter) meter.value = m.progress_pct;
  for (const [name, control] of Object.entries(m.controls)) {
    const button = document.querySelector(`[data-control="${name}"]`);
    const reason = document.querySelector(`[data-reason="${name}"]`);
    if (button) button.disabled = !control.allowed;
    if (reason) reason.textContent = control.reason || reason.dataset.default || "";
  }
  renderDecisions(m.decisions);
  section.dataset.final = String(m.final);
  section.dataset.status = m.status;
}

async function poll() {
  const after = samples.length > 0 ? samples[samples.length - 1].elapsed_s : -1;
  try {
    const response = await fetch(`${url}?after_s=${after}`, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
      cache: "no-store",
    });
    if (response.status === 401) {
      note.textContent = "Your session ended: reload the page to log in again.";
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    const m = body.migration;
    samples.push(...body.samples);
    switchAtS = m.switch_at_s;
    totalBytes = m.memory_total_bytes;
    completedAtS = m.status === "completed" ? m.total_s : null;
    render(m);
    draw();
    if (m.final) {
      note.textContent = "";
      return;
    }
    note.textContent = "updating every second";
  } catch (err) {
    note.textContent = `Cannot reach orbit-server (${err.message}); retrying.`;
  }
  window.setTimeout(poll, intervalMs);
}

let resizePending = false;
window.addEventListener("resize", () => {
  if (resizePending) return;
  resizePending = true;
  window.requestAnimationFrame(() => {
    resizePending = false;
    draw();
  });
});

draw();
poll();
