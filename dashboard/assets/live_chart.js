// The Live page's line charts (dashboard/live_chart.py): one uPlot chart a panel, two a row, kept across
// checks. Python sends every panel's spec at each check (dashboard/charts.py, line_spec) in one element;
// a panel whose points changed takes them with setData, one whose settings, runs or series changed is
// built anew, and one sent as it was is left alone.
// `uPlot` is the library's global, defined by uPlot.iife.min.js, which live_chart.py puts before this file.

const DASH = [6, 4];
const HEIGHT = 300;
const FORMATS = {
  percent: (v) => `${+(v * 100).toFixed(1)}%`,
  fixed2: (v) => v.toFixed(2),
  general: (v) => +v.toPrecision(4) + "",
};

function formatter(kind) {
  const format = FORMATS[kind] || FORMATS.general;
  return (v) => (v == null ? "–" : format(v));
}

function yRange(spec) {
  if (spec.y.log) return undefined;
  if (spec.y.range) return () => spec.y.range;
  return (u, min, max) => [0, max > 0 ? max * 1.05 : 1]; // losses, rates and speeds are never negative
}

function xRange(spec) {
  if (spec.time) return undefined;
  return (u, min, max) => [Math.min(0, min), max > 0 ? max : 1]; // one point sits in the run, not alone
}

function options(spec, width) {
  const y = formatter(spec.y.format);
  const series = spec.series.map((s) => ({
    label: s.label,
    stroke: s.color,
    width: s.raw ? 1 : 2,
    dash: s.dash ? DASH : undefined,
    spanGaps: true,
    // Markers while a curve is short (one or two points are never invisible), read at each draw.
    points: { show: (u, i) => !s.raw && u.data[i].filter((v) => v != null).length <= spec.markers_up_to, size: 7, fill: s.color },
    value: (u, v) => y(v),
  }));
  return {
    title: spec.title,
    width,
    height: HEIGHT,
    scales: {
      x: { time: spec.time, range: xRange(spec) },
      y: { distr: spec.y.log ? 3 : 1, range: yRange(spec) },
    },
    axes: [
      { label: spec.x_label, size: 40, labelSize: 20 },
      // A log axis leaves some ticks unlabelled (null): those stay blank.
      { label: spec.y_label, size: 60, labelSize: 20, values: (u, ticks) => ticks.map((v) => (v == null ? "" : y(v))) },
    ],
    series: [{ label: spec.x_label, value: (u, v) => (v == null ? "–" : spec.time ? new Date(v * 1000).toLocaleString() : +v.toPrecision(6) + "") }, ...series],
    legend: { live: true },
  };
}

// uPlot wants one x array for all series: join each series' own (x, y), null where a series has no point.
function aligned(spec) {
  return uPlot.join(spec.series.map((s) => [s.x, s.y]));
}

function hideRawFromLegend(chart, spec) {
  const rows = chart.root.querySelectorAll(".u-legend .u-series");
  spec.series.forEach((s, i) => {
    if (s.raw && rows[i + 1]) rows[i + 1].style.display = "none";
  });
}

function draw(root, spec) {
  // `version` names the points: a chart sent again as it was (no new values) is left as it is.
  const shape = JSON.stringify({ ...spec, version: null, series: spec.series.map(({ x, y, ...rest }) => rest) });
  if (root.chart && root.shape === shape) {
    if (root.version !== spec.version) root.chart.setData(aligned(spec));
    root.version = spec.version;
    return;
  }
  root.version = spec.version;
  root.chart?.destroy();
  root.chart = null;
  root.replaceChildren();
  root.shape = shape;
  if (!spec.series.length) {
    root.innerHTML = `<div class="regnet-chart-title"></div><div class="regnet-chart-empty"></div>`;
    root.firstChild.textContent = spec.title;
    root.lastChild.textContent = spec.empty;
    return;
  }
  root.chart = new uPlot(options(spec, Math.max(root.clientWidth, 200)), aligned(spec), root);
  hideRawFromLegend(root.chart, spec);
}

function chartFor(grid, title) {
  const found = Array.from(grid.children).find((child) => child.dataset.title === title);
  if (found) return found;
  const root = document.createElement("div");
  root.className = "regnet-chart";
  root.dataset.title = title;
  grid.appendChild(root);
  grid.observer.observe(root);
  return root;
}

export default function ({ parentElement, data }) {
  const grid = parentElement.querySelector(".regnet-charts");
  grid.observer ??= new ResizeObserver((entries) => {
    for (const { target } of entries) target.chart?.setSize({ width: Math.max(target.clientWidth, 200), height: HEIGHT });
  });
  for (const spec of data.panels) {
    const root = chartFor(grid, spec.title);
    draw(root, spec);
    root.dataset.x = spec.x_label;
    root.dataset.points = String(spec.series.reduce((n, s) => n + s.x.length, 0));
  }
  // Streamlit also calls this for a render it dropped because newer data came while the module loaded:
  // the charts belong to every render, so they go only with the element itself (no longer in the page).
  return () => {
    if (grid.isConnected) return;
    grid.observer.disconnect();
    for (const root of grid.children) root.chart?.destroy();
  };
}
