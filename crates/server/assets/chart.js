// A small SVG line chart for Strata's query page: one line per series, a time axis with
// local-time labels, a value axis, and a legend. Written for this page so the server needs
// no third-party script; everything is built with DOM calls (never innerHTML) because
// series names are label values sent by clients.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const MARGIN = { top: 10, right: 20, bottom: 28, left: 64 };

  function el(name, attrs) {
    const e = document.createElementNS(SVG, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }

  // Ticks at 1, 2 or 5 times a power of ten, so labels read as round numbers.
  function valueTicks(min, max, count) {
    const raw = (max - min) / Math.max(count, 1);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const ticks = [];
    for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) {
      ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return { ticks, step };
  }

  function formatValue(v, step) {
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
    const decimals = Math.max(0, Math.min(6, -Math.floor(Math.log10(step))));
    return v.toFixed(decimals);
  }

  // Time ticks on boundaries of a calendar-friendly interval in the viewer's time zone.
  const INTERVALS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
    10800, 21600, 43200, 86400, 172800, 604800].map((s) => s * 1000);

  function timeTicks(start, end, count) {
    const span = Math.max(end - start, 1);
    const iv = INTERVALS.find((i) => span / i <= count) || INTERVALS[INTERVALS.length - 1];
    const offset = -new Date(start).getTimezoneOffset() * 60000;
    const ticks = [];
    for (let t = Math.ceil((start + offset) / iv) * iv - offset; t <= end; t += iv) ticks.push(t);
    return { ticks, iv };
  }

  function pad2(n) { return String(n).padStart(2, "0"); }

  function formatTime(t, iv, span) {
    const d = new Date(t);
    let s = pad2(d.getHours()) + ":" + pad2(d.getMinutes());
    if (iv < 60000) s += ":" + pad2(d.getSeconds());
    if (span > 86400000) s = (d.getMonth() + 1) + "/" + d.getDate() + " " + s;
    return s;
  }

  // Draws `series` ([{name, points: [[ms, value], ...]}]) over [start, end] (ms) into
  // `container`, replacing what was there. `step` (ms) says how far apart points of one
  // line are: a wider gap, like a NaN or an infinity, breaks the line instead of bridging
  // it. Sets data-series-count on the <svg> and data-drawn on the container when done.
  function draw(container, series, start, end, step) {
    container.replaceChildren();
    container.removeAttribute("data-drawn");
    const width = Math.max(container.clientWidth || 0, 400);
    const height = 320;
    const w = width - MARGIN.left - MARGIN.right;
    const h = height - MARGIN.top - MARGIN.bottom;

    let lo = Infinity, hi = -Infinity;
    for (const s of series) {
      for (const [, v] of s.points) {
        if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      }
    }
    if (lo === Infinity) { lo = 0; hi = 1; }
    if (lo === hi) { const d = Math.abs(lo) * 0.1 || 1; lo -= d; hi += d; }
    const yt = valueTicks(lo, hi, 5);
    lo = Math.min(lo, yt.ticks[0]);
    hi = Math.max(hi, yt.ticks[yt.ticks.length - 1]);
    if (end <= start) end = start + 1;

    const x = (t) => MARGIN.left + ((t - start) / (end - start)) * w;
    const y = (v) => MARGIN.top + (1 - (v - lo) / (hi - lo)) * h;

    const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
    const axes = el("g", { class: "axis" });
    for (const v of yt.ticks) {
      axes.appendChild(el("line", { class: "grid", x1: MARGIN.left, x2: MARGIN.left + w, y1: y(v), y2: y(v) }));
      const label = el("text", { x: MARGIN.left - 6, y: y(v) + 4, "text-anchor": "end" });
      label.textContent = formatValue(v, yt.step);
      axes.appendChild(label);
    }
    const tt = timeTicks(start, end, Math.max(2, Math.floor(w / 90)));
    for (const t of tt.ticks) {
      axes.appendChild(el("line", { class: "grid", x1: x(t), x2: x(t), y1: MARGIN.top, y2: MARGIN.top + h }));
      const label = el("text", { x: x(t), y: MARGIN.top + h + 18, "text-anchor": "middle" });
      label.textContent = formatTime(t, tt.iv, end - start);
      axes.appendChild(label);
    }
    axes.appendChild(el("rect", { x: MARGIN.left, y: MARGIN.top, width: w, height: h, fill: "none", stroke: "#b0b8c0" }));
    svg.appendChild(axes);

    const legend = document.createElement("ul");
    legend.className = "legend";
    series.forEach((s, i) => {
      const color = PALETTE[i % PALETTE.length];
      let d = "";
      let run = 0; // points in the current unbroken stretch
      let prevT = null;
      const dots = [];
      for (const [t, v] of s.points) {
        const broken = !Number.isFinite(v) || (prevT !== null && t - prevT > step * 1.5);
        if (broken && run === 1) dots.push(d.slice(d.lastIndexOf("M")));
        if (broken) run = 0;
        if (Number.isFinite(v)) {
          d += (run === 0 ? "M" : "L") + x(t).toFixed(1) + "," + y(v).toFixed(1);
          run++;
        }
        prevT = t;
      }
      if (run === 1) dots.push(d.slice(d.lastIndexOf("M")));
      const path = el("path", { class: "series-line", d: d || "M0,0", stroke: color, "data-series-index": i });
      const title = el("title", {});
      title.textContent = s.name;
      path.appendChild(title);
      svg.appendChild(path);
      // A stretch of one point is invisible as a line: mark it with a dot.
      for (const m of dots) {
        const [px, py] = m.slice(1).split(",").map(Number);
        svg.appendChild(el("circle", { cx: px, cy: py, r: 2, fill: color }));
      }

      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.backgroundColor = color;
      li.append(sw, s.name);
      legend.appendChild(li);
    });
    svg.setAttribute("data-series-count", String(series.length));
    container.append(svg, legend);
    container.setAttribute("data-drawn", "true");
  }

  window.StrataChart = { draw };
})();
