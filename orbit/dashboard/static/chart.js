// The migration chart: memory remaining (left axis) and dirty rate (right axis) over time,
// with the switch to post-copy marked by a vertical line. Plain SVG, no library.

const SVG_NS = "http://www.w3.org/2000/svg";
const MIB = 1024 * 1024;
const HEIGHT_PX = 280;
const MIN_WIDTH_PX = 300;
const MARGIN = { top: 26, right: 58, bottom: 40, left: 58 };
const TICKS = 4;

function node(name, attrs, parent, text) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  if (text !== undefined) el.textContent = text;
  parent.append(el);
  return el;
}

// The smallest "round" number (a step below times a power of ten) >= value.
const NICE_STEPS = [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10];

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of NICE_STEPS) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}

function label(value) {
  return Number(value.toFixed(2)).toLocaleString("en");
}

// A series: its line, and a dot on its latest point (visible even with one point).
function series(points, cls, parent) {
  if (points.length === 0) return;
  const g = node("g", { class: `series ${cls}` }, parent);
  node("polyline", { points: points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ") }, g);
  const [lx, ly] = points[points.length - 1];
  node("circle", { cx: lx.toFixed(1), cy: ly.toFixed(1), r: 3 }, g);
}

/**
 * Draw the chart into `svg` (its children are replaced).
 * samples: [{elapsed_s, memory_remaining_bytes, dirty_rate_bytes_s}], oldest first;
 * switchAtS: seconds since the start when post-copy began, or null;
 * totalBytes: the VM's memory, the top of the memory axis;
 * completedAtS: when the migration completed (memory remaining 0 from then), or null.
 */
export function drawChart(svg, samples, switchAtS, totalBytes, completedAtS) {
  const width = Math.max(MIN_WIDTH_PX, Math.round(svg.getBoundingClientRect().width) || 640);
  svg.setAttribute("viewBox", `0 0 ${width} ${HEIGHT_PX}`);
  svg.setAttribute("height", String(HEIGHT_PX));
  svg.replaceChildren();
  const plotW = width - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT_PX - MARGIN.top - MARGIN.bottom;
  const bottom = MARGIN.top + plotH;
  if (samples.length === 0) {
    node("text", { x: width / 2, y: HEIGHT_PX / 2, class: "chart-empty", "text-anchor": "middle" }, svg, "No progress samples yet");
    svg.setAttribute("aria-label", "No progress samples yet");
    return;
  }
  const last = samples[samples.length - 1];
  const xMax = niceMax(Math.max(last.elapsed_s, switchAtS ?? 0, completedAtS ?? 0, 1));
  const memMax = niceMax(Math.max(totalBytes, ...samples.map((s) => s.memory_remaining_bytes)) / MIB);
  const rateMax = niceMax(Math.max(...samples.map((s) => s.dirty_rate_bytes_s)) / MIB);
  const x = (t) => MARGIN.left + (t / xMax) * plotW;
  const yMem = (mib) => bottom - (mib / memMax) * plotH;
  const yRate = (mibS) => bottom - (mibS / rateMax) * plotH;

  const axes = node("g", { class: "axes" }, svg);
  for (let i = 0; i <= TICKS; i += 1) {
    const y = bottom - (i / TICKS) * plotH;
    node("line", { x1: MARGIN.left, x2: MARGIN.left + plotW, y1: y, y2: y, class: "grid" }, axes);
    node("text", { x: MARGIN.left - 6, y: y + 4, "text-anchor": "end", class: "tick tick-remaining" }, axes, label((memMax * i) / TICKS));
    node("text", { x: MARGIN.left + plotW + 6, y: y + 4, "text-anchor": "start", class: "tick tick-dirty" }, axes, label((rateMax * i) / TICKS));
    const xv = x((xMax * i) / TICKS);
    node("text", { x: xv, y: bottom + 16, "text-anchor": "middle", class: "tick" }, axes, label((xMax * i) / TICKS));
  }
  node("line", { x1: MARGIN.left, x2: MARGIN.left + plotW, y1: bottom, y2: bottom, class: "axis" }, axes);
  node("text", { x: MARGIN.left, y: MARGIN.top - 10, "text-anchor": "middle", class: "axis-title tick-remaining" }, axes, "MiB");
  node("text", { x: MARGIN.left + plotW, y: MARGIN.top - 10, "text-anchor": "middle", class: "axis-title tick-dirty" }, axes, "MiB/s");
  node("text", { x: MARGIN.left + plotW / 2, y: HEIGHT_PX - 4, "text-anchor": "middle", class: "axis-title" }, axes, "seconds since the start");

  const remaining = samples.map((s) => [x(s.elapsed_s), yMem(s.memory_remaining_bytes / MIB)]);
  if (completedAtS !== null && completedAtS !== undefined && completedAtS >= last.elapsed_s) {
    remaining.push([x(completedAtS), yMem(0)]);
  }
  series(remaining, "series-remaining", svg);
  series(samples.map((s) => [x(s.elapsed_s), yRate(s.dirty_rate_bytes_s / MIB)]), "series-dirty", svg);

  let summary = `Memory remaining and dirty rate over ${last.elapsed_s.toFixed(1)} s`;
  if (switchAtS !== null && switchAtS !== undefined) {
    const sx = x(switchAtS);
    const marker = node("g", { class: "switch-marker", "data-switch-at": switchAtS }, svg);
    node("line", { x1: sx, x2: sx, y1: MARGIN.top, y2: bottom }, marker);
    const anchor = sx > MARGIN.left + plotW - 70 ? "end" : "start";
    node("text", { x: anchor === "end" ? sx - 4 : sx + 4, y: MARGIN.top + 12, "text-anchor": anchor }, marker, "post-copy");
    summary += `; switched to post-copy at ${switchAtS.toFixed(1)} s`;
  }
  svg.setAttribute("aria-label", summary);
}
