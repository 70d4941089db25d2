// mer_bench results site: sortable/filterable tables and plotly charts, no network.
// Every string from the data is inserted as text (textContent) or HTML-escaped before plotly
// sees it (plotly renders a few tags in labels).
"use strict";

(function () {
  const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9",
    "#F0E442", "#000000"];

  function escapeText(text) {
    // plotly decodes these three entities back; quotes are plain text to it
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  // ------------------------------------------------------------------ tables

  function sortKey(cell, numeric) {
    const raw = cell ? (cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent) : "";
    if (!numeric) return raw.toLowerCase();
    const value = parseFloat(raw);
    return Number.isFinite(value) ? value : null;
  }

  function sortTable(table, th) {
    const col = th.dataset.col;
    const numeric = th.dataset.type === "num";
    const ascending = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("thead th").forEach((h) => h.setAttribute("aria-sort", "none"));
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    // each tbody sorts on its own: reported figures stay apart from measured rows
    table.querySelectorAll("tbody").forEach((body) => {
      const rows = Array.from(body.querySelectorAll("tr")).filter((r) => !r.classList.contains("group"));
      const keyed = rows.map((row, i) => {
        const cell = Array.from(row.cells).find((c) => c.dataset.col === col);
        return { row, i, key: sortKey(cell, numeric) };
      });
      keyed.sort((a, b) => {
        // empty values last in both directions; stable otherwise
        if (a.key === null || a.key === "") return (b.key === null || b.key === "") ? a.i - b.i : 1;
        if (b.key === null || b.key === "") return -1;
        const c = a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
        return (ascending ? c : -c) || a.i - b.i;
      });
      keyed.forEach((k) => body.appendChild(k.row));
    });
  }

  function applyFilters() {
    const input = document.getElementById("filter");
    const query = input ? input.value.trim().toLowerCase() : "";
    const selects = Array.from(document.querySelectorAll("select[data-filter]"));
    let shown = 0;
    let total = 0;
    document.querySelectorAll("table.board:not(.detail) tbody tr").forEach((row) => {
      if (row.classList.contains("group")) return;
      total += 1;
      let ok = !query || row.textContent.toLowerCase().includes(query);
      selects.forEach((sel) => {
        if (!ok || !sel.value) return;
        const cell = Array.from(row.cells).find((c) => c.dataset.col === sel.dataset.filter);
        ok = cell !== undefined && (cell.dataset.sort ?? cell.textContent) === sel.value;
      });
      row.hidden = !ok;
      if (ok) shown += 1;
    });
    document.querySelectorAll("tbody.reported").forEach((body) => {
      const visible = Array.from(body.rows).some((r) => !r.classList.contains("group") && !r.hidden);
      body.hidden = !visible;
    });
    const count = document.getElementById("row-count");
    if (count) count.textContent = `${shown} of ${total} rows`;
  }

  function setupTables() {
    document.querySelectorAll("table.board").forEach((table) => {
      table.querySelectorAll("thead th").forEach((th) => {
        th.addEventListener("click", () => sortTable(table, th));
        th.addEventListener("keydown", (ev) => {
          if (ev.key === "Enter" || ev.key === " ") {
            ev.preventDefault();
            sortTable(table, th);
          }
        });
      });
    });
    const input = document.getElementById("filter");
    if (input) input.addEventListener("input", applyFilters);
    document.querySelectorAll("select[data-filter]").forEach((s) => s.addEventListener("change", applyFilters));
    applyFilters();
  }

  // ------------------------------------------------------------------ charts

  function fmt(value, scale) {
    if (value === null || value === undefined) return "n/a";
    return (value * scale).toFixed(scale === 1 ? 3 : 1);
  }

  function perSeedText(perSeed, scale) {
    return perSeed.map(([seed, v]) => `${seed === null ? "" : `seed ${seed}: `}${fmt(v, scale)}`)
      .join("<br>");
  }

  function curveTraces(page, mode, metric) {
    const scale = page.scale[metric];
    const traces = [];
    page.series.forEach((s, k) => {
      const points = (s.curves[mode] || {})[metric];
      if (!points || !points.length) return;
      const colour = PALETTE[k % PALETTE.length];
      const name = escapeText(s.name);
      const x = points.map((p) => p.rate);
      const band = points.every((p) => p.ci && p.ci[0] !== null && p.ci[1] !== null);
      if (band) {
        traces.push({
          x: x.concat(x.slice().reverse()),
          y: points.map((p) => p.ci[1] * scale).concat(points.slice().reverse().map((p) => p.ci[0] * scale)),
          type: "scatter", mode: "lines", fill: "toself", fillcolor: colour + "2E",
          line: { width: 0 }, hoverinfo: "skip", showlegend: false, legendgroup: name,
        });
      }
      traces.push({
        x,
        y: points.map((p) => p.mean * scale),
        type: "scatter", mode: "lines+markers", name, legendgroup: name,
        line: { color: colour, width: 2 }, marker: { size: 6 },
        customdata: points.map((p) => [
          p.sd === null ? "n/a" : fmt(p.sd, scale),
          p.ci ? `[${fmt(p.ci[0], scale)}, ${fmt(p.ci[1], scale)}]` : "not stored",
          perSeedText(p.per_seed, scale),
        ]),
        hovertemplate: `<b>${name}</b><br>rate %{x:.1f}<br>mean %{y:.${scale === 1 ? 3 : 1}f}` +
          " ± %{customdata[0]} (sd)<br>95% band %{customdata[1]}<br>%{customdata[2]}<extra></extra>",
      });
    });
    return traces;
  }

  function drawCurves(page) {
    const select = document.getElementById("curve-metric");
    const holder = document.getElementById("curve-charts");
    if (!select || !holder) return;
    const metric = select.value;
    holder.textContent = "";
    const axis = metric + (page.scale[metric] === 1 ? "" : " (%)");
    page.modes.forEach((mode) => {
      const div = document.createElement("div");
      div.className = "chart";
      div.id = `curve-${mode}`;
      div.dataset.mode = mode;
      holder.appendChild(div);
      const traces = curveTraces(page, mode, metric);
      div.dataset.series = String(traces.filter((t) => t.showlegend !== false).length);
      Plotly.newPlot(div, traces, {
        title: { text: `${escapeText(mode)}: ${escapeText(metric)} vs missing rate`, x: 0.02, xanchor: "left" },
        xaxis: { title: { text: "missing rate" }, range: [-0.03, 1.03], dtick: 0.1 },
        yaxis: { title: { text: escapeText(axis) } },
        margin: { t: 40, r: 10, b: 45, l: 55 },
        legend: { orientation: "h", y: -0.22 },
        hovermode: "closest",
      }, { displaylogo: false, responsive: true });
    });
  }

  function drawHeatmap(page) {
    const div = document.getElementById("smm-chart");
    const select = document.getElementById("curve-metric");
    if (!div || !page.smm.series.length) return;
    const metric = select ? select.value : page.default_metric;
    const scale = page.scale[metric];
    const conditions = page.smm.conditions.filter((c) =>
      page.smm.series.some((s) => (s.values[metric] || {})[c]));
    const z = [];
    const text = [];
    const hover = [];
    page.smm.series.forEach((s) => {
      const stats = s.values[metric] || {};
      z.push(conditions.map((c) => (stats[c] && stats[c].mean !== null ? stats[c].mean * scale : null)));
      text.push(conditions.map((c) => (stats[c] ? fmt(stats[c].mean, scale) : "")));
      hover.push(conditions.map((c) => (stats[c]
        ? `${fmt(stats[c].mean, scale)} ± ${stats[c].sd === null ? "n/a" : fmt(stats[c].sd, scale)}` +
          `<br>${perSeedText(stats[c].per_seed, scale)}` : "no cell")));
    });
    const lower = page.lower_is_better.includes(metric);
    Plotly.newPlot(div, [{
      type: "heatmap", z, x: conditions, y: page.smm.series.map((s) => escapeText(s.name)),
      text, texttemplate: "%{text}", customdata: hover, colorscale: "Viridis", reversescale: lower,
      hovertemplate: "<b>%{y}</b> kept %{x}<br>%{customdata}<extra></extra>",
      colorbar: { title: { text: escapeText(metric) } },
    }], {
      title: { text: `SMM: ${escapeText(metric)} by kept modalities`, x: 0.02, xanchor: "left" },
      xaxis: { title: { text: "kept modalities" }, type: "category" },
      yaxis: { type: "category", autorange: "reversed", automargin: true },
      margin: { t: 40, r: 10, b: 45, l: 140 },
    }, { displaylogo: false, responsive: true });
  }

  function setupCharts() {
    const node = document.getElementById("page-data");
    if (!node || typeof Plotly === "undefined") return;
    const page = JSON.parse(node.textContent);
    const select = document.getElementById("curve-metric");
    page.metrics.forEach((m) => {
      const option = document.createElement("option");
      option.value = m;
      option.textContent = m;
      select.appendChild(option);
    });
    select.value = page.default_metric;
    const draw = () => {
      drawCurves(page);
      drawHeatmap(page);
    };
    select.addEventListener("change", draw);
    draw();
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupTables();
    setupCharts();
  });
})();
