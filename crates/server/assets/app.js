// Strata's query page: runs a PromQL expression through /api/v1/query or
// /api/v1/query_range and shows the answer as a table and, for range queries, a graph.
// The form's state lives in the URL's hash so a query can be bookmarked or shared (and a
// page opened with an expression in its hash runs it at once). Results are rendered with
// textContent only: label values come from clients and must never become markup.
"use strict";

(function () {
  const TOKEN_KEY = "strata.bearerToken";
  const $ = (id) => document.getElementById(id);
  const form = $("query-form"), exprInput = $("expr"), rangeSel = $("range"), stepInput = $("step");

  function mode() { return form.querySelector("input[name=mode]:checked").value; }
  function setMode(m) {
    const r = form.querySelector(`input[name=mode][value="${m === "range" ? "range" : "instant"}"]`);
    r.checked = true;
  }

  // --- bearer token (session storage: gone when the tab closes, never in the URL) ---
  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (_) { return ""; }
  }
  function showTokenState() {
    $("token-state").textContent = token() ? "token set for this tab" : "no token";
  }
  $("save-token").addEventListener("click", () => {
    try { sessionStorage.setItem(TOKEN_KEY, $("token").value.trim()); } catch (_) { /* storage off */ }
    $("token").value = "";
    showTokenState();
  });
  $("forget-token").addEventListener("click", () => {
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* storage off */ }
    showTokenState();
  });

  // --- URL hash <-> form ---
  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    if (p.has("expr")) exprInput.value = p.get("expr");
    if (p.has("mode")) setMode(p.get("mode"));
    if (p.has("range") && [...rangeSel.options].some((o) => o.value === p.get("range"))) {
      rangeSel.value = p.get("range");
    }
    if (p.has("step")) stepInput.value = p.get("step");
    return exprInput.value.trim() !== "";
  }
  function writeHash() {
    const p = new URLSearchParams({ expr: exprInput.value, mode: mode(), range: rangeSel.value });
    if (stepInput.value.trim()) p.set("step", stepInput.value.trim());
    history.replaceState(null, "", "#" + p.toString());
  }

  // --- results ---
  function seriesName(metric) {
    const name = metric.__name__ || "";
    const pairs = Object.keys(metric).filter((k) => k !== "__name__").sort()
      .map((k) => `${k}=${JSON.stringify(metric[k])}`);
    return pairs.length || !name ? `${name}{${pairs.join(", ")}}` : name;
  }

  function cell(text, cls, tag) {
    const td = document.createElement(tag || "td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function renderTable(data) {
    const table = $("result-table");
    table.replaceChildren();
    const head = document.createElement("tr");
    const th = (text) => cell(text, "", "th");
    const rows = [];
    if (data.resultType === "matrix") {
      head.append(th("Series"), th("Last value"), th("Points"));
      for (const s of data.result) {
        const last = s.values.length ? s.values[s.values.length - 1][1] : "";
        rows.push([seriesName(s.metric), last, String(s.values.length)]);
      }
    } else if (data.resultType === "vector") {
      head.append(th("Series"), th("Value"));
      for (const s of data.result) rows.push([seriesName(s.metric), s.value[1]]);
    } else {
      head.append(th("Type"), th("Value"));
      rows.push([data.resultType, String(data.result[1])]);
    }
    const thead = document.createElement("thead");
    thead.appendChild(head);
    const tbody = document.createElement("tbody");
    for (const r of rows) {
      const tr = document.createElement("tr");
      tr.append(cell(r[0], "labels"), ...r.slice(1).map((v) => cell(v, "value")));
      tbody.appendChild(tr);
    }
    table.append(thead, tbody);
    table.setAttribute("data-rows", String(rows.length));
  }

  function renderGraph(data, start, end, stepMs) {
    const graph = $("graph");
    // An instant query of a range selector (`x[5m]`) also answers with a matrix, but its
    // raw samples belong in the table, not on a graph laid out for the chosen time range.
    if (data.resultType !== "matrix" || !(stepMs > 0)) {
      graph.replaceChildren();
      graph.removeAttribute("data-drawn");
      return;
    }
    const series = data.result.map((s) => ({
      name: seriesName(s.metric),
      points: s.values.map(([t, v]) => [t * 1000, parseFloat(v)]),
    }));
    window.StrataChart.draw(graph, series, start, end, stepMs);
  }

  function showError(msg) {
    const e = $("error");
    e.textContent = msg;
    e.hidden = false;
  }

  function clearResults() {
    $("error").hidden = true;
    $("warnings").hidden = true;
    $("result-table").replaceChildren();
    $("result-table").removeAttribute("data-rows");
    $("graph").replaceChildren();
    $("graph").removeAttribute("data-drawn");
  }

  // Prometheus' duration syntax, as far as a step needs it: 15s, 1m30s, 2h; or bare seconds.
  function parseStep(s) {
    if (/^\d+(\.\d+)?$/.test(s)) return parseFloat(s);
    const re = /(\d+)(ms|s|m|h|d|w|y)/gy;
    const unit = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800, y: 31536000 };
    let total = 0, m, pos = 0;
    while ((m = re.exec(s)) !== null) { total += parseInt(m[1], 10) * unit[m[2]]; pos = re.lastIndex; }
    return pos === s.length && total > 0 ? total : NaN;
  }

  async function run() {
    const expr = exprInput.value.trim();
    if (!expr) return;
    writeHash();
    clearResults();
    document.body.dataset.state = "running";
    const endS = Date.now() / 1000;
    const rangeS = parseInt(rangeSel.value, 10);
    const params = new URLSearchParams({ query: expr });
    let path = "/api/v1/query", stepS = 0;
    if (mode() === "range") {
      // Like Prometheus' own page: about 250 points across the graph unless told otherwise.
      stepS = stepInput.value.trim() ? parseStep(stepInput.value.trim()) : Math.max(1, Math.floor(rangeS / 250));
      if (!(stepS > 0)) {
        showError(`invalid step "${stepInput.value}": use a duration such as 15s or 1m`);
        document.body.dataset.state = "error";
        return;
      }
      path = "/api/v1/query_range";
      params.set("start", (endS - rangeS).toFixed(3));
      params.set("end", endS.toFixed(3));
      params.set("step", String(stepS));
    } else {
      params.set("time", endS.toFixed(3));
    }
    const headers = { "Content-Type": "application/x-www-form-urlencoded" };
    if (token()) headers.Authorization = "Bearer " + token();
    $("status").textContent = "running…";
    const began = performance.now();
    let body;
    try {
      const resp = await fetch(path, { method: "POST", headers, body: params });
      const text = await resp.text();
      try { body = JSON.parse(text); } catch (_) { body = null; }
      if (!body || body.status !== "success") {
        const why = body && body.error ? `${body.errorType}: ${body.error}` : text.trim();
        const hint = resp.status === 401 ? "\n(set the bearer token above)" : "";
        throw new Error(`HTTP ${resp.status}: ${why}${hint}`);
      }
    } catch (e) {
      $("status").textContent = "";
      showError(e.message);
      document.body.dataset.state = "error";
      return;
    }
    const ms = Math.round(performance.now() - began);
    const n = Array.isArray(body.data.result) && body.data.resultType !== "scalar" && body.data.resultType !== "string"
      ? body.data.result.length : 1;
    $("status").textContent = `${n} result${n === 1 ? "" : "s"} in ${ms} ms`;
    const warnings = (body.warnings || []).concat(body.infos || []);
    if (warnings.length) { $("warnings").textContent = warnings.join("\n"); $("warnings").hidden = false; }
    renderTable(body.data);
    renderGraph(body.data, (endS - rangeS) * 1000, endS * 1000, stepS * 1000);
    document.body.dataset.state = "done";
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); run(); });
  // Ctrl/Cmd+Enter runs from the expression box; plain Enter keeps multi-line editing.
  exprInput.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); }
  });
  showTokenState();
  if (readHash()) run();
})();
