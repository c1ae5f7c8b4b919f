/* app.js - the cairn console: one page, routed by path; every view reads the stack's
 * standard APIs through the console's own origin (/api/metrics = Prometheus,
 * /api/logs = Loki, /api/jaeger and /api/tempo = the trace store, /api/alerts =
 * Alertmanager v2). No framework: DOM built with h(), text set as text (never as
 * HTML), charts by uPlot. */
"use strict";
(function () {

/* ---- small helpers ---- */

function h(tag, attrs) {
  var el = document.createElement(tag);
  if (attrs) for (var k in attrs) {
    var v = attrs[k];
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.slice(0, 2) === "on") el.addEventListener(k.slice(2), v);
    else if (k === "style") for (var s in v) el.style[s] = v[s];
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (var i = 2; i < arguments.length; i++) add(el, arguments[i]);
  return el;
}
function add(el, c) {
  if (c === null || c === undefined || c === false) return;
  if (Array.isArray(c)) { c.forEach(function (x) { add(el, x); }); return; }
  el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
}
function svg(tag, attrs) {
  var el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (var k in attrs || {}) {
    if (k === "text") el.textContent = attrs[k];
    else if (k.slice(0, 2) === "on") el.addEventListener(k.slice(2), attrs[k]);
    else el.setAttribute(k, attrs[k]);
  }
  for (var i = 2; i < arguments.length; i++) if (arguments[i]) el.appendChild(arguments[i]);
  return el;
}
function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }
function link(href, text, cls) { return h("a", { href: href, "data-nav": true, "class": cls }, text); }
function qs(o) {
  var p = new URLSearchParams();
  for (var k in o) if (o[k] !== undefined && o[k] !== null && o[k] !== "") p.set(k, o[k]);
  return p.toString();
}

var session = { csrf: "", user: "", auth: false };

function api(path, opts) {
  opts = opts || {};
  var init = { method: opts.method || "GET", headers: {}, credentials: "same-origin" };
  if (init.method !== "GET") init.headers["X-CSRF-Token"] = session.csrf;
  if (opts.json !== undefined) { init.body = JSON.stringify(opts.json); init.headers["Content-Type"] = "application/json"; }
  if (opts.form) { init.body = opts.form; init.headers["Content-Type"] = "application/x-www-form-urlencoded"; }
  return fetch(path, init).then(function (r) {
    if (r.status === 401 && session.auth) { location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); }
    return r.text().then(function (t) {
      var j = null;
      try { j = t ? JSON.parse(t) : null; } catch (e) { j = null; }
      if (!r.ok) {
        var msg = (j && (j.error || j.message)) || t || r.statusText;
        var err = new Error(r.status + ": " + String(msg).trim());
        err.status = r.status;
        throw err;
      }
      return j !== null ? j : t;
    });
  });
}
function prom(path, params) { return api("/api/metrics/api/v1/" + path + "?" + qs(params)).then(function (j) { return j.data; }); }
function loki(path, params) { return api("/api/logs/loki/api/v1/" + path + "?" + qs(params)).then(function (j) { return j.data; }); }

/* durations: "5m", "1h30m", "15s" <-> seconds */
var UNITS = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800, y: 31536000 };
function parseDur(s) {
  if (typeof s === "number") return s;
  var re = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)/g, m, t = 0, seen = 0;
  while ((m = re.exec(String(s)))) { t += parseFloat(m[1]) * UNITS[m[2]]; seen += m[0].length; }
  return seen && seen === String(s).trim().length ? t : NaN;
}
function fmtDur(sec) {
  if (!(sec > 0)) return "0s";
  var out = "", parts = [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]];
  for (var i = 0; i < parts.length; i++) {
    var n = Math.floor(sec / parts[i][1]);
    if (n) { out += n + parts[i][0]; sec -= n * parts[i][1]; }
  }
  return out || Math.round(sec * 1000) + "ms";
}
function fmtMicros(us) {
  if (us < 1000) return us.toFixed(0) + "µs";
  if (us < 1e6) return (us / 1000).toFixed(us < 1e4 ? 2 : 1) + "ms";
  return (us / 1e6).toFixed(2) + "s";
}
function fmtTime(ms) {
  var d = new Date(ms), p = function (n, w) { return String(n).padStart(w || 2, "0"); };
  return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " + p(d.getHours()) + ":" +
    p(d.getMinutes()) + ":" + p(d.getSeconds()) + "." + p(d.getMilliseconds(), 3);
}
function fmtNum(v, unit) {
  if (v === null || v === undefined || isNaN(v)) return "–";
  var a = Math.abs(v);
  function si(x, base, names) {
    var i = 0;
    while (Math.abs(x) >= base && i < names.length - 1) { x /= base; i++; }
    return (Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2)) + names[i];
  }
  switch (unit) {
    case "bytes": case "decbytes": return si(v, unit === "bytes" ? 1024 : 1000, [" B", " KiB", " MiB", " GiB", " TiB"].map(function (x) { return unit === "bytes" ? x : x.replace("i", ""); }));
    case "Bps": case "binBps": return si(v, 1024, [" B/s", " KiB/s", " MiB/s", " GiB/s"]);
    case "s": return a === 0 ? "0 s" : a < 1e-3 ? (v * 1e6).toFixed(0) + " µs" : a < 1 ? (v * 1000).toFixed(a < 0.01 ? 2 : 1) + " ms" : a < 120 ? v.toFixed(2) + " s" : fmtDur(v);
    case "ms": return fmtNum(v / 1000, "s");
    case "percent": return v.toFixed(1) + "%";
    case "percentunit": return (v * 100).toFixed(1) + "%";
    case "reqps": return si(v, 1000, [" req/s", "K req/s", "M req/s"]);
    case "ops": return si(v, 1000, [" ops/s", "K ops/s", "M ops/s"]);
    case "dateTimeAsIso": case "dateTimeFromNow": return fmtTime(v * (v < 1e11 ? 1000 : 1));
    default:
      if (a !== 0 && (a < 0.001 || a >= 1e15)) return v.toExponential(2);
      if (Number.isInteger(v) && a < 1e6) return String(v);
      return si(v, 1000, ["", "K", "M", "G", "T"]);
  }
}
function seriesName(metric, legend) {
  if (legend) return legend.replace(/\{\{\s*([a-zA-Z_][\w]*)\s*\}\}/g, function (_, n) { return metric[n] !== undefined ? metric[n] : ""; });
  var name = metric.__name__ || "", ls = [];
  for (var k in metric) if (k !== "__name__") ls.push(k + '="' + metric[k] + '"');
  return name + (ls.length || !name ? "{" + ls.join(", ") + "}" : "");
}
var PALETTE = ["#2563eb", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#ea580c", "#4f46e5", "#0d9488", "#a16207", "#64748b"];
function colorFor(s) { var x = 0; for (var i = 0; i < s.length; i++) x = (x * 31 + s.charCodeAt(i)) >>> 0; return PALETTE[x % PALETTE.length]; }

/* time ranges: ?range=1h, or ?from=&to= (unix seconds, from a zoom) */
function timeRange(q, dflt) {
  var now = Date.now() / 1000, from = parseFloat(q.get("from")), to = parseFloat(q.get("to"));
  if (from > 0 && to > from) return { start: from, end: to, range: to - from, label: fmtTime(from * 1000) + " → " + fmtTime(to * 1000) };
  var r = parseDur(q.get("range") || dflt || "1h");
  if (!(r > 0)) r = 3600;
  return { start: now - r, end: now, range: r, label: fmtDur(r) };
}
function stepFor(range, width) { return Math.max(1, Math.ceil(range / Math.max(100, Math.min(width || 1000, 2000)))); }
var RANGES = ["5m", "15m", "1h", "3h", "6h", "12h", "24h", "2d", "7d"];
function rangeSelect(current, onchange) {
  var sel = h("select", { "aria-label": "time range", onchange: function () { onchange(sel.value); } });
  var opts = RANGES.slice();
  if (opts.indexOf(current) < 0) opts.unshift(current);
  opts.forEach(function (r) { sel.appendChild(h("option", { value: r, selected: r === current }, r === current && !parseDur(r) ? "custom" : "last " + r)); });
  return sel;
}

var view = { timers: [], sockets: [], plots: [] };
function every(ms, fn) { view.timers.push(setInterval(fn, ms)); }
function teardown() {
  view.timers.forEach(clearInterval);
  view.sockets.forEach(function (s) { try { s.close(); } catch (e) { /* gone */ } });
  view.plots.forEach(function (p) { p.destroy(); });
  view = { timers: [], sockets: [], plots: [] };
}
function setURL(path, params, replace) {
  var u = path + (qs(params) ? "?" + qs(params) : "");
  if (u === location.pathname + location.search) return;
  (replace ? history.replaceState : history.pushState).call(history, null, "", u);
}
function errorBox(e) { return h("p", { "class": "error" }, String(e && e.message ? e.message : e)); }

/* ---- charts (uPlot) ---- */

/* Prometheus matrix -> uPlot's aligned columns: one x axis (the union of the
 * timestamps, which a range query aligns on its steps), one column per series. */
function alignMatrix(result, legend) {
  var ts = {}, i;
  result.forEach(function (s) { (s.values || []).forEach(function (v) { ts[v[0]] = 1; }); });
  var xs = Object.keys(ts).map(Number).sort(function (a, b) { return a - b; });
  var idx = new Map();
  xs.forEach(function (x, k) { idx.set(x, k); });
  var data = [xs], series = [{}];
  result.forEach(function (s) {
    var col = new Array(xs.length).fill(null);
    (s.values || []).forEach(function (v) { col[idx.get(v[0])] = parseFloat(v[1]); });
    data.push(col);
    var name = seriesName(s.metric || {}, legend);
    series.push({ label: name, stroke: PALETTE[(series.length - 1) % PALETTE.length], width: 1.5, spanGaps: false,
                  points: { show: xs.length < 60 } });
  });
  return { data: data, series: series };
}

/* Draws series into el; onzoom(from, to) after a drag across the plot. */
function timeChart(el, data, series, opts) {
  opts = opts || {};
  var width = Math.max(200, el.clientWidth - 12), height = opts.height || 260;
  var unit = opts.unit;
  var o = {
    width: width, height: height, series: series,
    legend: { show: opts.legend !== false, live: true },
    cursor: { drag: { x: true, y: false }, points: { size: 6 } },
    scales: { x: { time: true } },
    axes: [{}, { values: function (u, vals) { return vals.map(function (v) { return fmtNum(v, unit); }); },
                 size: function (u, vals) { var n = 0; (vals || []).forEach(function (v) { n = Math.max(n, String(v).length); }); return 14 + n * 7; } }],
    hooks: { setSelect: [function (u) {
      if (u.select.width < 5 || !opts.onzoom) return;
      var a = u.posToVal(u.select.left, "x"), b = u.posToVal(u.select.left + u.select.width, "x");
      opts.onzoom(a, b);
    }] },
  };
  if (opts.bars) {
    o.series = series.map(function (s, i) {
      if (!i) return s;
      return Object.assign({}, s, { paths: uPlot.paths.bars({ size: [0.9, 40] }), fill: s.stroke, points: { show: false } });
    });
  }
  var p = new uPlot(o, data, el);
  view.plots.push(p);
  return p;
}

/* Runs a range query and draws it; resolves to the number of series. */
function graphQuery(el, query, tr, opts) {
  opts = opts || {};
  clear(el);
  var step = opts.step || stepFor(tr.range, el.clientWidth);
  return prom("query_range", { query: query, start: tr.start.toFixed(3), end: tr.end.toFixed(3), step: step })
    .then(function (d) {
      clear(el);
      if (d.resultType !== "matrix") { el.appendChild(h("p", { "class": "muted" }, "The result is a " + d.resultType + ", not a range of series.")); return 0; }
      if (!d.result.length) { el.appendChild(h("p", { "class": "muted" }, "No data.")); return 0; }
      var a = alignMatrix(d.result, opts.legend);
      timeChart(el, a.data, a.series, opts);
      el.setAttribute("data-series", d.result.length);
      return d.result.length;
    }, function (e) { clear(el).appendChild(errorBox(e)); return -1; });
}

/* ---- completion for PromQL and LogQL editors ---- */

var FUNCS = ["abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
  "count_over_time", "day_of_month", "day_of_week", "delta", "deriv", "exp", "floor", "histogram_quantile", "holt_winters",
  "hour", "idelta", "increase", "irate", "label_join", "label_replace", "last_over_time", "ln", "log2", "log10",
  "max_over_time", "min_over_time", "minute", "month", "predict_linear", "quantile_over_time", "rate", "resets", "round",
  "scalar", "sgn", "sort", "sort_desc", "sqrt", "stddev_over_time", "sum_over_time", "time", "timestamp", "vector", "year",
  "sum", "avg", "min", "max", "count", "count_values", "topk", "bottomk", "quantile", "stddev", "stdvar", "group", "by", "without"];
var LOGQL_WORDS = ["rate", "count_over_time", "bytes_over_time", "bytes_rate", "sum_over_time", "avg_over_time",
  "max_over_time", "min_over_time", "quantile_over_time", "absent_over_time", "sum", "avg", "min", "max", "count", "topk",
  "bottomk", "by", "without", "json", "logfmt", "regexp", "pattern", "line_format", "label_format", "unwrap", "drop", "keep", "decolorize"];

var cache = {};
function cached(key, fn) { if (!cache[key]) cache[key] = fn().catch(function () { delete cache[key]; return []; }); return cache[key]; }

function completer(kind) {
  var labels = kind === "logql"
    ? function () { return cached("loki-labels", function () { return loki("labels", { start: (Date.now() / 1000 - 6 * 3600).toFixed(0) }); }); }
    : function (metric) { return cached("labels:" + metric, function () { return prom("labels", metric ? { "match[]": metric } : {}); }); };
  var values = kind === "logql"
    ? function (l) { return cached("loki-values:" + l, function () { return loki("label/" + encodeURIComponent(l) + "/values", { start: (Date.now() / 1000 - 6 * 3600).toFixed(0) }); }); }
    : function (l, metric) { return cached("values:" + l + ":" + metric, function () { return prom("label/" + encodeURIComponent(l) + "/values", metric ? { "match[]": metric } : {}); }); };
  return function (text, pos) {
    var before = text.slice(0, pos);
    var open = before.lastIndexOf("{"), close = before.lastIndexOf("}");
    if (open > close) {
      var inside = before.slice(open + 1);
      var mm = before.slice(0, open).match(/([a-zA-Z_:][\w:]*)\s*$/);
      var metric = kind === "promql" && mm ? mm[1] : "";
      var v = inside.match(/([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)$/);
      if (v) return values(v[1], metric).then(function (vals) {
        return { from: pos - v[3].length, items: (vals || []).filter(function (x) { return x.indexOf(v[3]) === 0 || !v[3]; }).slice(0, 200).map(function (x) { return { text: x, insert: x.replace(/\\/g, "\\\\").replace(/"/g, '\\"') + '"', kind: "value" }; }) };
      });
      var n = inside.match(/(?:^|,)\s*([a-zA-Z_]\w*)?$/);
      if (n) {
        var p = n[1] || "";
        return labels(metric).then(function (ls) {
          return { from: pos - p.length, items: (ls || []).filter(function (x) { return x !== "__name__" && x.indexOf(p) === 0; }).map(function (x) { return { text: x, insert: x + '="', kind: "label" }; }) };
        });
      }
      return Promise.resolve(null);
    }
    var w = before.match(/([a-zA-Z_:][\w:]*)$/);
    if (!w) return Promise.resolve(null);
    var word = w[1];
    if (kind === "logql") {
      return Promise.resolve({ from: pos - word.length, items: LOGQL_WORDS.filter(function (x) { return x.indexOf(word) === 0 && x !== word; }).map(function (x) { return { text: x, insert: x, kind: "keyword" }; }) });
    }
    return cached("metric-names", function () { return prom("label/__name__/values", {}); }).then(function (names) {
      var items = (names || []).filter(function (x) { return x.indexOf(word) >= 0 && x !== word; })
        .sort(function (a, b) { return (a.indexOf(word) === 0 ? 0 : 1) - (b.indexOf(word) === 0 ? 0 : 1) || (a < b ? -1 : 1); })
        .slice(0, 200).map(function (x) { return { text: x, insert: x, kind: "metric" }; });
      FUNCS.forEach(function (f) { if (f.indexOf(word) === 0 && f !== word) items.unshift({ text: f, insert: f + (/^(by|without)$/.test(f) ? " (" : "("), kind: "function" }); });
      return { from: pos - word.length, items: items };
    });
  };
}

/* A query editor: a textarea with a completion list; Enter runs, Shift+Enter
 * starts a new line. */
function queryEditor(kind, value, onrun, placeholder) {
  var ta = h("textarea", { "class": "query", rows: 1, spellcheck: "false", placeholder: placeholder, "aria-label": kind + " query" });
  ta.value = value || "";
  var list = h("ul", { "class": "complete", role: "listbox", hidden: true });
  var wrap = h("div", { "class": "editor" }, ta, list);
  var provide = completer(kind), items = [], sel = 0, from = 0, seq = 0;
  function hide() { list.hidden = true; items = []; clear(list); }
  function pick(i) {
    var it = items[i];
    if (!it) return;
    var pos = ta.selectionStart;
    var after = ta.value.slice(pos);
    if (it.kind === "value" && after.charAt(0) === '"') after = after.slice(1);
    ta.value = ta.value.slice(0, from) + it.insert + after;
    var np = from + it.insert.length;
    ta.setSelectionRange(np, np);
    hide();
    ta.focus();
    if (it.kind === "label") suggest();
  }
  function render() {
    clear(list);
    if (!items.length) { hide(); return; }
    items.forEach(function (it, i) {
      list.appendChild(h("li", { "class": i === sel ? "sel" : "", role: "option", onmousedown: function (e) { e.preventDefault(); pick(i); } },
        it.text, h("span", { "class": "kind" }, it.kind)));
    });
    list.hidden = false;
    list.style.top = (ta.offsetHeight + 2) + "px";
    var li = list.children[sel];
    if (li && li.scrollIntoView) li.scrollIntoView({ block: "nearest" });
  }
  function suggest() {
    var my = ++seq;
    provide(ta.value, ta.selectionStart).then(function (r) {
      if (my !== seq) return;
      if (!r || !r.items.length) { hide(); return; }
      items = r.items; from = r.from; sel = 0; render();
    });
  }
  ta.addEventListener("input", suggest);
  ta.addEventListener("blur", function () { setTimeout(hide, 150); });
  ta.addEventListener("keydown", function (e) {
    if (!list.hidden && items.length) {
      if (e.key === "ArrowDown") { sel = (sel + 1) % items.length; render(); e.preventDefault(); return; }
      if (e.key === "ArrowUp") { sel = (sel + items.length - 1) % items.length; render(); e.preventDefault(); return; }
      if (e.key === "Tab" || (e.key === "Enter" && !e.shiftKey)) { pick(sel); e.preventDefault(); return; }
      if (e.key === "Escape") { hide(); e.preventDefault(); return; }
    }
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); hide(); onrun(ta.value); }
  });
  ta.addEventListener("input", function () { ta.style.height = "auto"; ta.style.height = Math.min(300, ta.scrollHeight + 2) + "px"; });
  return { el: wrap, input: ta, value: function () { return ta.value; } };
}

/* ---- the stack map ---- */

var REQUEST_ROLES = { dns: 0, edge: 1, "demo-app": 2 };
function stackRates() {
  /* per job: requests/s, errors/s, p99 seconds, restarts in the last hour */
  var qs4 = {
    req: 'sum by (job) (rate(edge_requests_total[5m])) or sum by (job) (rate(demo_http_requests_total[5m])) or sum by (job) (rate(dns_queries_total[5m]))',
    err: 'sum by (job) (rate(edge_requests_total{code=~"5.*"}[5m])) or sum by (job) (rate(demo_http_requests_total{code=~"5.*"}[5m])) or sum by (job) (rate(dns_responses_total{rcode="SERVFAIL"}[5m]))',
    p99: 'histogram_quantile(0.99, sum by (job, le) (rate(edge_request_duration_seconds_bucket[5m]))) or histogram_quantile(0.99, sum by (job, le) (rate(demo_http_request_duration_seconds_bucket[5m]))) or histogram_quantile(0.99, sum by (job, le) (rate(dns_query_duration_seconds_bucket[5m])))',
    restarts: 'changes(process_start_time_seconds[1h])',
    up: 'up',
  };
  var out = {};
  return Promise.all(Object.keys(qs4).map(function (k) {
    return prom("query", { query: qs4[k] }).then(function (d) {
      d.result.forEach(function (s) { var j = s.metric.job; if (!j) return; (out[j] = out[j] || {})[k] = parseFloat(s.value[1]); });
    }, function () { /* no metrics service: cards without rates */ });
  })).then(function () { return out; });
}

function serviceCard(s, rates) {
  var r = rates[s.name] || {};
  var stats = [];
  if (r.req !== undefined) stats.push(h("span", { title: "requests per second (5m)" }, fmtNum(r.req, "reqps")));
  if (r.err !== undefined) stats.push(h("span", { title: "errors per second (5m)", "class": r.err > 0 ? "error" : "" }, fmtNum(r.err, "") + " err/s"));
  if (r.p99 !== undefined && !isNaN(r.p99)) stats.push(h("span", { title: "99th percentile latency (5m)" }, "p99 " + fmtNum(r.p99, "s")));
  if (r.restarts) stats.push(h("span", { "class": "error", title: "restarts in the last hour" }, r.restarts + " restarts"));
  var ep = s.endpoints.filter(function (e) { return e.what !== "admin"; }).map(function (e) { return e.url; }).slice(0, 2).join(" ");
  return h("a", { "class": "card svc", href: "/services/" + encodeURIComponent(s.name), "data-nav": true, "data-service": s.name, "data-state": s.state },
    h("div", { "class": "name" }, s.name, h("span", { "class": "badge " + s.state }, s.state)),
    h("div", { "class": "role" }, s.role, " · ", h("span", { "class": "mono" }, ep)),
    stats.length ? h("div", { "class": "stats" }, stats) : null);
}

function pageStack(main) {
  main.appendChild(h("h1", null, "Stack"));
  var body = h("div");
  main.appendChild(body);
  function draw() {
    return Promise.all([api("/api/ui/stack"), stackRates()]).then(function (x) {
      var st = x[0], rates = x[1];
      clear(body);
      body.appendChild(h("p", { "class": "muted" }, st.services.length + " services from " + st.stack + "; the request path, then the services that watch and keep it."));
      var path = st.services.filter(function (s) { return s.role in REQUEST_ROLES; });
      var rest = st.services.filter(function (s) { return !(s.role in REQUEST_ROLES); });
      /* columns: dns, then each edge in the stack file's order (cdn before lb), then the apps */
      var cols = [];
      path.filter(function (s) { return s.role === "dns"; }).forEach(function (s) { cols.push({ title: "entry", items: [s] }); });
      path.filter(function (s) { return s.role === "edge"; }).forEach(function (s, i, all) { cols.push({ title: all.length > 1 && i === 0 ? "cdn" : "load balancer", items: [s] }); });
      var apps = path.filter(function (s) { return s.role === "demo-app"; });
      if (apps.length) cols.push({ title: "apps", items: apps });
      var map = h("div", { "class": "map", id: "request-path" });
      cols.forEach(function (c, i) {
        if (i) map.appendChild(h("div", { "class": "arrow" }, "→"));
        map.appendChild(h("div", { "class": "col" }, h("div", { "class": "col-title" }, c.title), c.items.map(function (s) { return serviceCard(s, rates); })));
      });
      body.appendChild(h("h2", null, "Request path"));
      body.appendChild(map);
      body.appendChild(h("h2", null, "Observability, storage and operations"));
      body.appendChild(h("div", { "class": "obs" }, rest.map(function (s) { return serviceCard(s, rates); })));
    }, function (e) { clear(body).appendChild(errorBox(e)); });
  }
  every(5000, draw);
  return draw();
}

/* ---- a service ---- */

function pageService(main, name) {
  main.appendChild(h("h1", null, "Service ", h("span", { "class": "mono" }, name)));
  var info = h("div", { "class": "card" }, "…");
  main.appendChild(info);
  return api("/api/ui/stack").then(function (st) {
    var s = st.services.filter(function (x) { return x.name === name; })[0];
    if (!s) { clear(info).appendChild(errorBox("No service " + name + " in this stack.")); return; }
    clear(info);
    info.appendChild(h("div", { "class": "row" }, h("b", null, s.role), h("span", { "class": "badge " + s.state, id: "svc-state" }, s.state),
      s.since ? h("span", { "class": "muted" }, "since " + fmtTime(s.since)) : null));
    info.appendChild(h("table", null, s.endpoints.map(function (e) { return h("tr", null, h("td", null, e.what), h("td", { "class": "mono" }, e.url)); })));
    var tr = { start: Date.now() / 1000 - 3600, end: Date.now() / 1000, range: 3600 };
    var job = 'job="' + name + '"';
    var graphs = [
      ["Requests/s", s.role === "edge" ? "sum by (code) (rate(edge_requests_total{" + job + "}[1m]))" : s.role === "demo-app" ? "sum by (code) (rate(demo_http_requests_total{" + job + "}[1m]))" : s.role === "dns" ? "sum by (rcode) (rate(dns_responses_total{" + job + "}[1m]))" : null, "reqps"],
      ["CPU (cores)", "rate(process_cpu_seconds_total{" + job + "}[1m])", ""],
      ["Resident memory", "process_resident_memory_bytes{" + job + "}", "bytes"],
      ["Up", "up{" + job + "}", ""],
    ].filter(function (g) { return g[1]; });
    main.appendChild(h("h2", null, "Metrics ", link("/explore/metrics?" + qs({ query: "{" + job + "}", range: "1h" }), "explore")));
    var grid = h("div", { "class": "obs" }), waits = [];
    main.appendChild(grid);
    graphs.forEach(function (g) {
      var el = h("div", { "class": "graph" });
      grid.appendChild(h("div", null, h("div", { "class": "muted" }, g[0]), el));
      waits.push(graphQuery(el, g[1], tr, { unit: g[2], height: 140, legend: false }));
    });
    var logq = '{service="' + name + '"}';
    main.appendChild(h("h2", null, "Recent logs ", link("/explore/logs?" + qs({ query: logq, range: "1h" }), "explore")));
    var logs = h("div");
    main.appendChild(logs);
    waits.push(logLines(logs, logq, tr, 50));
    main.appendChild(h("h2", null, "Recent traces ", link("/explore/traces?" + qs({ service: name }), "explore")));
    var traces = h("div");
    main.appendChild(traces);
    waits.push(api("/api/jaeger/api/traces?" + qs({ service: name, limit: 10, lookback: "1h" })).then(function (j) { traceList(traces, j.data || []); },
      function (e) { traces.appendChild(errorBox(e)); }));
    main.appendChild(h("h2", null, "Alerts"));
    var al = h("div");
    main.appendChild(al);
    waits.push(api("/api/alerts/api/v2/alerts?" + qs({ filter: 'job="' + name + '"' })).then(function (list) {
      if (!list.length) al.appendChild(h("p", { "class": "muted" }, "No alerts for job " + name + "."));
      list.forEach(function (a) { al.appendChild(alertRow(a)); });
    }, function (e) { al.appendChild(errorBox(e)); }));
    return Promise.all(waits);
  });
}

/* ---- the metrics explorer ---- */

function pageMetrics(main, q) {
  var query = q.get("query") || "";
  var tr = timeRange(q, "1h");
  var tab = q.get("tab") === "table" ? "table" : "graph";
  var rangeVal = q.get("range") || (q.get("from") ? "custom" : "1h");
  main.appendChild(h("h1", null, "Metrics"));
  function go(params) {
    var p = { query: ed.value(), range: params.from ? null : (params.range || rangeVal), from: params.from, to: params.to, tab: params.tab || tab };
    if (p.range === "custom") p.range = "1h";
    if (p.tab === "graph") delete p.tab;
    setURL("/explore/metrics", p);
    render();
  }
  var ed = queryEditor("promql", query, function () { go({}); }, "PromQL, e.g. rate(edge_requests_total[5m])  (Enter runs, Shift+Enter: new line)");
  main.appendChild(ed.el);
  var bar = h("div", { "class": "row" },
    h("button", { onclick: function () { go({}); }, id: "run" }, "Run"),
    rangeSelect(rangeVal, function (r) { go({ range: r }); }),
    h("span", { "class": "muted" }, tr.label),
    h("span", { "class": "grow" }),
    h("div", { "class": "tabs" },
      h("button", { "class": tab === "graph" ? "on" : "", onclick: function () { go({ tab: "graph" }); } }, "Graph"),
      h("button", { "class": tab === "table" ? "on" : "", onclick: function () { go({ tab: "table" }); } }, "Table")));
  main.appendChild(bar);
  var out = h("div", { id: "result" });
  main.appendChild(out);
  if (!query) { out.appendChild(h("p", { "class": "muted" }, "Type a PromQL expression: names, labels and values complete as you type.")); return; }
  if (tab === "table") {
    return prom("query", { query: query, time: tr.end.toFixed(3) }).then(function (d) { resultTable(out, d); }, function (e) { out.appendChild(errorBox(e)); });
  }
  var g = h("div", { "class": "graph" });
  out.appendChild(g);
  return graphQuery(g, query, tr, { onzoom: function (a, b) { go({ from: a.toFixed(3), to: b.toFixed(3) }); } });
}

function resultTable(el, d) {
  clear(el);
  if (d.resultType === "scalar" || d.resultType === "string") { el.appendChild(h("div", { "class": "card mono" }, String(d.result[1]))); return; }
  if (!d.result.length) { el.appendChild(h("p", { "class": "muted" }, "No data.")); return; }
  el.appendChild(h("table", { "class": "card" }, h("tr", null, h("th", null, "series"), h("th", null, "value")),
    d.result.map(function (s) {
      var v = s.value ? s.value[1] : (s.values || []).map(function (x) { return x[1] + " @" + x[0]; }).join("\n");
      return h("tr", null, h("td", { "class": "mono" }, seriesName(s.metric)), h("td", { "class": "num mono" }, v));
    })));
}

/* ---- the logs explorer ---- */

var TRACE_RE = /(?:trace_?id|traceID)["']?\s*[=:]\s*["']?([0-9a-fA-F]{32})/;
function logLine(ts, labels, line) {
  var lv = (labels.level || labels.detected_level || "").toLowerCase();
  var m = TRACE_RE.exec(line);
  var text = m ? [line.slice(0, m.index), h("a", { href: "/trace/" + m[1].toLowerCase(), "data-nav": true, "class": "trace-link" }, m[0]), line.slice(m.index + m[0].length)] : line;
  var ls = Object.keys(labels).sort().map(function (k) { return k + "=" + labels[k]; }).join(" ");
  return h("div", { "class": "logline level-" + lv }, h("span", { "class": "ts" }, fmtTime(Number(BigInt(ts) / 1000000n))),
    h("span", { "class": "line" }, text), h("span", { "class": "labels" }, ls));
}
function streamsToLines(result) {
  var rows = [];
  result.forEach(function (s) { s.values.forEach(function (v) { rows.push([v[0], s.stream, v[1]]); }); });
  rows.sort(function (a, b) { return a[0].length - b[0].length || (a[0] < b[0] ? 1 : a[0] > b[0] ? -1 : 0); });
  return rows;
}
function logLines(el, query, tr, limit) {
  return loki("query_range", { query: query, start: Math.floor(tr.start * 1e9).toString(), end: Math.ceil(tr.end * 1e9).toString(), limit: limit, direction: "backward" })
    .then(function (d) {
      clear(el);
      if (d.resultType !== "streams") { el.appendChild(h("p", { "class": "muted" }, "A metric query: see the graph.")); return 0; }
      var rows = streamsToLines(d.result);
      if (!rows.length) { el.appendChild(h("p", { "class": "muted" }, "No lines.")); return 0; }
      var box = h("div", { "class": "loglines", id: "lines" });
      rows.forEach(function (r) { box.appendChild(logLine(r[0], r[1], r[2])); });
      el.appendChild(box);
      el.setAttribute("data-lines", rows.length);
      return rows.length;
    }, function (e) { clear(el).appendChild(errorBox(e)); return -1; });
}
function lokiMatrixGraph(el, query, tr, opts) {
  opts = opts || {};
  var step = opts.step || stepFor(tr.range, el.clientWidth);
  return loki("query_range", { query: query, start: Math.floor(tr.start * 1e9).toString(), end: Math.ceil(tr.end * 1e9).toString(), step: step + "s" })
    .then(function (d) {
      clear(el);
      if (!d.result.length) { el.appendChild(h("p", { "class": "muted" }, "No data.")); return 0; }
      var a = alignMatrix(d.result, opts.legend);
      timeChart(el, a.data, a.series, opts);
      return d.result.length;
    }, function (e) { clear(el).appendChild(errorBox(e)); return -1; });
}

function pageLogs(main, q) {
  var query = q.get("query") || "";
  var tr = timeRange(q, "1h");
  var rangeVal = q.get("range") || (q.get("from") ? "custom" : "1h");
  main.appendChild(h("h1", null, "Logs"));
  function go(params) {
    var p = { query: ed.value(), range: params.from ? null : (params.range || rangeVal), from: params.from, to: params.to };
    if (p.range === "custom") p.range = "1h";
    setURL("/explore/logs", p);
    render();
  }
  var ed = queryEditor("logql", query, function () { go({}); }, 'LogQL, e.g. {service="lb"} |= "GET"  (labels and values complete inside { })');
  main.appendChild(ed.el);
  var tailBtn = h("button", { "class": "secondary", id: "tail" }, "Live tail");
  main.appendChild(h("div", { "class": "row" }, h("button", { onclick: function () { go({}); }, id: "run" }, "Run"),
    rangeSelect(rangeVal, function (r) { go({ range: r }); }), h("span", { "class": "muted" }, tr.label), h("span", { "class": "grow" }), tailBtn));
  var vol = h("div", { "class": "graph volume", id: "volume" }), lines = h("div", { id: "result" });
  main.appendChild(vol);
  main.appendChild(lines);
  if (!query) { vol.hidden = true; lines.appendChild(h("p", { "class": "muted" }, "Pick a stream: type { and the labels complete.")); return; }
  var isLog = /^\s*\{/.test(query);
  var zoom = function (a, b) { go({ from: a.toFixed(3), to: b.toFixed(3) }); };
  if (!isLog) { lines.hidden = true; return lokiMatrixGraph(vol, query, tr, { onzoom: zoom, height: 260 }); }
  var step = stepFor(tr.range, 160);
  var volume = lokiMatrixGraph(vol, "sum by (level) (count_over_time(" + query + " [" + step + "s]))", tr, { step: step, bars: true, height: 90, legend: false, onzoom: zoom });
  tailBtn.addEventListener("click", function () {
    if (view.tail) { view.tail.close(); view.tail = null; tailBtn.textContent = "Live tail"; return; }
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/logs/loki/api/v1/tail?" + qs({ query: ed.value(), limit: 100 });
    var ws = new WebSocket(url);
    view.tail = ws;
    view.sockets.push(ws);
    tailBtn.textContent = "Stop tail";
    clear(lines);
    var box = h("div", { "class": "loglines", id: "lines" });
    lines.appendChild(box);
    ws.onmessage = function (ev) {
      var m = JSON.parse(ev.data);
      streamsToLines(m.streams || []).reverse().forEach(function (r) {
        box.insertBefore(logLine(r[0], r[1], r[2]), box.firstChild);
        if (box.childNodes.length > 2000) box.removeChild(box.lastChild);
      });
      lines.setAttribute("data-tailed", box.childNodes.length);
    };
    ws.onerror = function () { lines.insertBefore(errorBox("live tail: the connection failed"), lines.firstChild); };
  });
  return Promise.all([volume, logLines(lines, query, tr, 1000)]);
}

/* ---- traces ---- */

function traceList(el, traces) {
  clear(el);
  if (!traces.length) { el.appendChild(h("p", { "class": "muted" }, "No traces.")); return; }
  var rows = traces.map(function (t) {
    var spans = t.spans || [];
    var roots = spans.filter(function (s) { return !(s.references || []).some(function (r) { return r.refType === "CHILD_OF"; }); });
    var root = roots[0] || spans[0] || {};
    var start = Math.min.apply(null, spans.map(function (s) { return s.startTime; }));
    var end = Math.max.apply(null, spans.map(function (s) { return s.startTime + s.duration; }));
    var svcs = {};
    spans.forEach(function (s) { var p = t.processes[s.processID]; if (p) svcs[p.serviceName] = (svcs[p.serviceName] || 0) + 1; });
    var err = spans.some(function (s) { return (s.tags || []).some(function (g) { return g.key === "error" && g.value === true; }); });
    return { id: t.traceID, start: start, dur: end - start, root: root, proc: t.processes[root.processID] || {}, svcs: svcs, n: spans.length, err: err };
  }).sort(function (a, b) { return b.start - a.start; });
  el.appendChild(h("table", { "class": "card", id: "trace-results" }, h("tr", null, ["trace", "root", "services", "spans", "duration", "started"].map(function (x) { return h("th", null, x); })),
    rows.map(function (r) {
      return h("tr", { "data-trace": r.id }, h("td", { "class": "mono" }, link("/trace/" + r.id, r.id.slice(0, 16))),
        h("td", null, (r.proc.serviceName || "?") + ": " + (r.root.operationName || ""), r.err ? h("span", { "class": "badge error" }, "error") : null),
        h("td", null, Object.keys(r.svcs).map(function (s) { return s + " (" + r.svcs[s] + ")"; }).join(", ")),
        h("td", { "class": "num" }, r.n), h("td", { "class": "num" }, fmtMicros(r.dur)), h("td", null, fmtTime(r.start / 1000)));
    })));
}

function tempoList(el, traces) {
  clear(el);
  if (!traces.length) { el.appendChild(h("p", { "class": "muted" }, "No traces match.")); return; }
  el.appendChild(h("table", { "class": "card", id: "trace-results" }, h("tr", null, ["trace", "root", "duration", "started"].map(function (x) { return h("th", null, x); })),
    traces.map(function (t) {
      return h("tr", { "data-trace": t.traceID }, h("td", { "class": "mono" }, link("/trace/" + t.traceID, t.traceID.slice(0, 16))),
        h("td", null, (t.rootServiceName || "?") + ": " + (t.rootTraceName || "")), h("td", { "class": "num" }, fmtMicros((t.durationMs || 0) * 1000)),
        h("td", null, fmtTime(Number(BigInt(t.startTimeUnixNano || "0") / 1000000n))));
    })));
}

function serviceGraph(el, deps) {
  clear(el);
  if (!deps.length) { el.appendChild(h("p", { "class": "muted" }, "No calls between services recorded yet.")); return; }
  var nodes = {}, depth = {};
  deps.forEach(function (d) { nodes[d.parent] = 1; nodes[d.child] = 1; });
  var names = Object.keys(nodes);
  names.forEach(function (n) { depth[n] = 0; });
  for (var it = 0; it < names.length; it++) deps.forEach(function (d) { if (d.parent !== d.child && depth[d.child] < depth[d.parent] + 1 && depth[d.parent] < names.length) depth[d.child] = depth[d.parent] + 1; });
  var cols = {};
  names.sort().forEach(function (n) { (cols[depth[n]] = cols[depth[n]] || []).push(n); });
  var ncol = Object.keys(cols).length, maxRows = Math.max.apply(null, Object.keys(cols).map(function (k) { return cols[k].length; }));
  var W = Math.max(480, ncol * 200), H = maxRows * 60 + 20, pos = {};
  Object.keys(cols).forEach(function (c) { cols[c].forEach(function (n, i) { pos[n] = { x: 20 + c * 200, y: 20 + i * 60 + (maxRows - cols[c].length) * 30 }; }); });
  var g = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, "class": "svcgraph", id: "service-graph" });
  g.appendChild(svg("defs", null, svg("marker", { id: "arr", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#6b7280" }))));
  deps.forEach(function (d) {
    var a = pos[d.parent], b = pos[d.child];
    if (!a || !b || d.parent === d.child) return;
    g.appendChild(svg("line", { x1: a.x + 140, y1: a.y + 15, x2: b.x, y2: b.y + 15, stroke: "#9ca3af", "stroke-width": 1.5, "marker-end": "url(#arr)" }));
    g.appendChild(svg("text", { x: (a.x + 140 + b.x) / 2, y: (a.y + b.y) / 2 + 10, "text-anchor": "middle", fill: "#6b7280", text: String(d.callCount) }));
  });
  names.forEach(function (n) {
    var p = pos[n];
    var a = svg("a", { href: "/explore/traces?service=" + encodeURIComponent(n), "data-nav": "" },
      svg("rect", { x: p.x, y: p.y, width: 140, height: 30, rx: 5, fill: "#fff", stroke: colorFor(n), "stroke-width": 2 }),
      svg("text", { x: p.x + 70, y: p.y + 19, "text-anchor": "middle", fill: "#1f2937", text: n }));
    g.appendChild(a);
  });
  el.appendChild(g);
}

function pageTraces(main, q) {
  main.appendChild(h("h1", null, "Traces"));
  var tr = timeRange(q, "1h");
  var rangeVal = q.get("range") || "1h";
  var svcSel = h("select", { id: "service", "aria-label": "service" }, h("option", { value: "" }, "any service"));
  var opSel = h("select", { id: "operation", "aria-label": "operation" }, h("option", { value: "" }, "any operation"));
  var tags = h("input", { id: "tags", placeholder: "tags: http.status_code=500 error=true", size: 34, value: q.get("tags") || "" });
  var minD = h("input", { id: "minDuration", placeholder: "min (100ms)", size: 9, value: q.get("minDuration") || "" });
  var maxD = h("input", { id: "maxDuration", placeholder: "max", size: 9, value: q.get("maxDuration") || "" });
  var limit = h("input", { id: "limit", type: "number", min: 1, max: 1500, value: q.get("limit") || "20", size: 5 });
  var rsel = rangeSelect(rangeVal, function (r) { rangeVal = r; });
  var tql = h("input", { id: "traceql", placeholder: 'TraceQL, e.g. { resource.service.name = "lb" && duration > 10ms }', value: q.get("q") || "", "class": "grow mono" });
  function search() { setURL("/explore/traces", { service: svcSel.value, operation: opSel.value, tags: tags.value, minDuration: minD.value, maxDuration: maxD.value, limit: limit.value, range: rangeVal }); render(); }
  function searchQL() { setURL("/explore/traces", { q: tql.value, limit: limit.value, range: rangeVal }); render(); }
  tql.addEventListener("keydown", function (e) { if (e.key === "Enter") searchQL(); });
  main.appendChild(h("div", { "class": "card" },
    h("div", { "class": "row" }, svcSel, opSel, tags, minD, maxD, limit, rsel, h("button", { id: "find", onclick: search }, "Find traces")),
    h("div", { "class": "row" }, tql, h("button", { id: "run-traceql", onclick: searchQL }, "Run TraceQL"))));
  var results = h("div", { id: "result" });
  main.appendChild(results);
  main.appendChild(h("h2", null, "Service graph"));
  var graph = h("div");
  main.appendChild(graph);
  function loadOps(s, want) {
    clear(opSel).appendChild(h("option", { value: "" }, "any operation"));
    if (!s) return Promise.resolve();
    return api("/api/jaeger/api/services/" + encodeURIComponent(s) + "/operations").then(function (j) {
      (j.data || []).sort().forEach(function (o) { opSel.appendChild(h("option", { value: o, selected: o === want }, o)); });
    });
  }
  svcSel.addEventListener("change", function () { loadOps(svcSel.value); });
  var ready = api("/api/jaeger/api/services").then(function (j) {
    (j.data || []).sort().forEach(function (s) { svcSel.appendChild(h("option", { value: s, selected: s === q.get("service") }, s)); });
    return loadOps(q.get("service"), q.get("operation"));
  }, function (e) { results.appendChild(errorBox(e)); });
  var deps = api("/api/jaeger/api/dependencies?" + qs({ endTs: Date.now(), lookback: Math.round(tr.range * 1000) })).then(function (j) { serviceGraph(graph, j.data || []); },
    function (e) { graph.appendChild(errorBox(e)); });
  ready = Promise.all([ready, deps]);
  if (q.get("q")) {
    return ready.then(function () { return api("/api/tempo/api/search?" + qs({ q: q.get("q"), limit: q.get("limit") || 20, start: Math.floor(tr.start), end: Math.ceil(tr.end) }))
      .then(function (j) { tempoList(results, j.traces || []); }, function (e) { results.appendChild(errorBox(e)); }); });
  }
  if (q.get("service")) {
    var p = { service: q.get("service"), operation: q.get("operation"), tags: q.get("tags") ? logfmtToJSON(q.get("tags")) : null,
              minDuration: q.get("minDuration"), maxDuration: q.get("maxDuration"), limit: q.get("limit") || 20,
              start: Math.floor(tr.start * 1e6), end: Math.ceil(tr.end * 1e6) };
    return ready.then(function () {
      return api("/api/jaeger/api/traces?" + qs(p)).then(function (j) { traceList(results, j.data || []); }, function (e) { results.appendChild(errorBox(e)); });
    });
  }
  results.appendChild(h("p", { "class": "muted" }, "Pick a service, or write TraceQL."));
  return ready;
}
function logfmtToJSON(s) {
  var o = {}, re = /([^\s=]+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))/g, m;
  while ((m = re.exec(s))) o[m[1]] = m[2] !== undefined ? m[2] : m[3];
  return JSON.stringify(o);
}

function tagValue(t) { return t.type === "binary" ? "(binary)" : typeof t.value === "object" ? JSON.stringify(t.value) : String(t.value); }
function kvTable(rows) {
  return h("table", null, rows.map(function (r) { return h("tr", null, h("td", null, r[0]), h("td", { "class": "mono" }, r[1])); }));
}

function pageTrace(main, id) {
  main.appendChild(h("h1", null, "Trace ", h("span", { "class": "mono" }, id)));
  var body = h("div");
  main.appendChild(body);
  return api("/api/jaeger/api/traces/" + encodeURIComponent(id)).then(function (j) {
    var t = (j.data || [])[0];
    if (!t) { body.appendChild(errorBox("No such trace.")); return; }
    var spans = t.spans, byId = {}, kids = {};
    spans.forEach(function (s) { byId[s.spanID] = s; });
    var roots = [];
    spans.forEach(function (s) {
      var parent = (s.references || []).filter(function (r) { return r.refType === "CHILD_OF" && byId[r.spanID]; })[0];
      if (parent) (kids[parent.spanID] = kids[parent.spanID] || []).push(s); else roots.push(s);
    });
    var byStart = function (a, b) { return a.startTime - b.startTime; };
    var order = [];
    (function walk(list, depth) { list.sort(byStart).forEach(function (s) { order.push([s, depth]); walk(kids[s.spanID] || [], depth + 1); }); })(roots, 0);
    var t0 = Math.min.apply(null, spans.map(function (s) { return s.startTime; }));
    var t1 = Math.max.apply(null, spans.map(function (s) { return s.startTime + s.duration; }));
    var total = Math.max(1, t1 - t0);
    var svcs = {};
    spans.forEach(function (s) { svcs[t.processes[s.processID].serviceName] = 1; });
    body.appendChild(h("p", { "class": "muted" }, spans.length + " spans · " + Object.keys(svcs).length + " services (" + Object.keys(svcs).join(", ") + ") · " + fmtMicros(total) + " · started " + fmtTime(t0 / 1000)));
    var ticks = h("div", { "class": "ticks" });
    for (var k = 0; k <= 4; k++) ticks.appendChild(h("span", { style: { left: (k * 25) + "%", transform: k === 4 ? "translateX(-100%)" : k ? "translateX(-50%)" : "" } }, fmtMicros(total * k / 4)));
    var wf = h("div", { "class": "waterfall", id: "waterfall" }, h("div", { "class": "wf-head" }, h("div", { "class": "wf-name" }, "service: operation"), ticks));
    var details = h("div", { "class": "details card", id: "span-details" }, h("p", { "class": "muted" }, "Select a span for its attributes, events and links."));
    order.forEach(function (o) {
      var s = o[0], proc = t.processes[s.processID];
      var left = (s.startTime - t0) / total * 100, width = s.duration / total * 100;
      var err = (s.tags || []).some(function (g) { return (g.key === "error" && g.value === true) || (g.key === "otel.status_code" && g.value === "ERROR"); });
      var bar = h("div", { "class": "wf-bar" + (err ? " err" : ""), style: { left: left + "%", width: Math.max(width, 0.2) + "%", background: colorFor(proc.serviceName) } });
      var dur = h("span", { "class": "wf-dur", style: left + width > 80 ? { right: (100 - left + 0.5) + "%" } : { left: (left + width + 0.5) + "%" } }, fmtMicros(s.duration));
      var row = h("div", { "class": "wf-row", "data-span": s.spanID, "data-service": proc.serviceName },
        h("div", { "class": "wf-name", style: { paddingLeft: (6 + o[1] * 14) + "px" }, title: proc.serviceName + ": " + s.operationName },
          h("span", { "class": "svcname" }, proc.serviceName), " ", s.operationName),
        h("div", { "class": "wf-track" }, bar, dur));
      row.addEventListener("click", function () {
        Array.prototype.forEach.call(wf.querySelectorAll(".wf-row.sel"), function (x) { x.classList.remove("sel"); });
        row.classList.add("sel");
        spanDetails(details, s, proc, t0);
      });
      wf.appendChild(row);
    });
    body.appendChild(wf);
    body.appendChild(details);
  }, function (e) { body.appendChild(errorBox(e)); });
}

function spanDetails(el, s, proc, t0) {
  clear(el);
  el.appendChild(h("h2", null, proc.serviceName + ": " + s.operationName));
  el.appendChild(kvTable([["span id", s.spanID], ["start", "+" + fmtMicros(s.startTime - t0) + " (" + fmtTime(s.startTime / 1000) + ")"], ["duration", fmtMicros(s.duration)]]));
  el.appendChild(h("h3", null, "Attributes"));
  el.appendChild(kvTable((s.tags || []).map(function (t) { return [t.key, tagValue(t)]; })));
  el.appendChild(h("h3", null, "Resource"));
  el.appendChild(kvTable([["service.name", proc.serviceName]].concat((proc.tags || []).map(function (t) { return [t.key, tagValue(t)]; }))));
  if ((s.logs || []).length) {
    el.appendChild(h("h3", null, "Events"));
    s.logs.forEach(function (l) { el.appendChild(h("div", { "class": "card" }, h("div", { "class": "muted" }, "+" + fmtMicros(l.timestamp - t0)), kvTable(l.fields.map(function (f) { return [f.key, tagValue(f)]; })))); });
  }
  var refs = (s.references || []);
  if (refs.length) {
    el.appendChild(h("h3", null, "References and links"));
    el.appendChild(kvTable(refs.map(function (r) { return [r.refType, h("span", null, link("/trace/" + r.traceID, r.traceID.slice(0, 16)), " span " + r.spanID)]; })));
  }
}

/* ---- alerts and silences ---- */

function matcherText(labels) { return Object.keys(labels).sort().map(function (k) { return k + '="' + labels[k] + '"'; }).join(", "); }
function alertRow(a) {
  var st = a.status ? a.status.state : a.state;
  return h("div", { "class": "card row alert", "data-alertname": a.labels.alertname },
    h("span", { "class": "badge " + (st === "active" ? "firing" : st) }, st === "active" ? "firing" : st),
    h("b", null, a.labels.alertname), h("span", { "class": "mono muted grow" }, matcherText(a.labels)),
    a.startsAt || a.activeAt ? h("span", { "class": "muted" }, "since " + fmtTime(Date.parse(a.startsAt || a.activeAt))) : null,
    (a.annotations && (a.annotations.summary || a.annotations.description)) ? h("span", null, a.annotations.summary || a.annotations.description) : null,
    h("a", { href: "/silences?" + qs({ matchers: matcherText(a.labels) }), "data-nav": true }, "Silence"));
}

function pageAlerts(main) {
  main.appendChild(h("h1", null, "Alerts"));
  var groups = h("div", { id: "alert-groups" }), rules = h("div", { id: "rules" });
  main.appendChild(h("h2", null, "Alertmanager (grouped as routed)"));
  main.appendChild(groups);
  main.appendChild(h("h2", null, "Rules of the metrics service"));
  main.appendChild(rules);
  var a = api("/api/alerts/api/v2/alerts/groups").then(function (gs) {
    clear(groups);
    if (!gs.length) groups.appendChild(h("p", { "class": "muted" }, "No alerts."));
    gs.forEach(function (g) {
      groups.appendChild(h("div", { "class": "card" }, h("div", { "class": "row" }, h("b", null, matcherText(g.labels) || "(all)"), h("span", { "class": "muted" }, "receiver " + (g.receiver ? g.receiver.name : "?"))),
        g.alerts.map(alertRow)));
    });
  }, function (e) { groups.appendChild(errorBox(e)); });
  var r = prom("rules", {}).then(function (d) {
    clear(rules);
    var n = 0;
    (d.groups || []).forEach(function (g) {
      var list = g.rules.filter(function (x) { return x.type === "alerting"; });
      if (!list.length) return;
      rules.appendChild(h("h3", null, g.name, h("span", { "class": "muted" }, " " + g.file)));
      list.forEach(function (x) {
        n++;
        rules.appendChild(h("div", { "class": "card" }, h("div", { "class": "row" }, h("span", { "class": "badge " + (x.state === "firing" ? "firing" : x.state) }, x.state), h("b", null, x.name),
          h("span", { "class": "mono muted" }, x.query), x["for"] ? h("span", { "class": "muted" }, "for " + fmtDur(x.duration || 0)) : null),
          (x.alerts || []).map(alertRow)));
      });
    });
    if (!n) rules.appendChild(h("p", { "class": "muted" }, "No alerting rules."));
  }, function (e) { rules.appendChild(errorBox(e)); });
  return Promise.all([a, r]);
}

function parseMatchers(s) {
  var out = [], re = /\s*([a-zA-Z_][\w]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)/g, m, used = 0;
  s = s.trim().replace(/^\{|\}$/g, "");
  while ((m = re.exec(s)) && m[0].length) { out.push({ name: m[1], value: m[3].replace(/\\(.)/g, "$1"), isRegex: m[2].indexOf("~") >= 0, isEqual: m[2][0] !== "!" }); used += m[0].length; }
  if (used !== s.length || !out.length) throw new Error('matchers: expected name="value", name=~"regex", ... separated by commas');
  return out;
}

function pageSilences(main, q) {
  main.appendChild(h("h1", null, "Silences"));
  var matchers = h("input", { id: "matchers", "class": "grow mono", value: q.get("matchers") || "", placeholder: 'alertname="HighLatency", job="lb"' });
  var dur = h("input", { id: "duration", value: "2h", size: 6 });
  var by = h("input", { id: "createdBy", value: session.user || "console", size: 12 });
  var comment = h("input", { id: "comment", "class": "grow", placeholder: "why (required)" });
  var msg = h("div");
  var list = h("div", { id: "silence-list" });
  function create(e) {
    e.preventDefault();
    clear(msg);
    var body;
    try {
      var d = parseDur(dur.value);
      if (!(d > 0)) throw new Error("duration: expected e.g. 30m, 2h, 1d");
      if (!comment.value.trim()) throw new Error("comment: say why");
      var now = new Date();
      body = { matchers: parseMatchers(matchers.value), startsAt: now.toISOString(), endsAt: new Date(now.getTime() + d * 1000).toISOString(), createdBy: by.value, comment: comment.value };
    } catch (err) { msg.appendChild(errorBox(err)); return; }
    api("/api/alerts/api/v2/silences", { method: "POST", json: body }).then(function (r) {
      msg.appendChild(h("p", { id: "created" }, "Silence ", h("span", { "class": "mono" }, r.silenceID), " created."));
      load();
    }, function (err) { msg.appendChild(errorBox(err)); });
  }
  main.appendChild(h("form", { "class": "card", id: "new-silence", onsubmit: create },
    h("div", { "class": "row" }, h("label", null, "Matchers "), matchers),
    h("div", { "class": "row" }, h("label", null, "Duration "), dur, h("label", null, "Created by "), by, comment, h("button", { type: "submit" }, "Create silence")), msg));
  main.appendChild(list);
  function load() {
    return api("/api/alerts/api/v2/silences").then(function (ss) {
      clear(list);
      ss.sort(function (a, b) { return (a.status.state === "active" ? 0 : 1) - (b.status.state === "active" ? 0 : 1) || Date.parse(b.updatedAt) - Date.parse(a.updatedAt); });
      if (!ss.length) list.appendChild(h("p", { "class": "muted" }, "No silences."));
      ss.forEach(function (s) {
        var m = s.matchers.map(function (x) {
          var op = x.isEqual === false ? (x.isRegex ? "!~" : "!=") : (x.isRegex ? "=~" : "=");
          return x.name + op + '"' + x.value + '"';
        }).join(", ");
        list.appendChild(h("div", { "class": "card row", "data-silence": s.id },
          h("span", { "class": "badge " + s.status.state }, s.status.state), h("span", { "class": "mono grow" }, m),
          h("span", { "class": "muted" }, s.createdBy + ": " + s.comment), h("span", { "class": "muted" }, "until " + fmtTime(Date.parse(s.endsAt))),
          s.status.state !== "expired" ? h("button", { "class": "danger", onclick: function () {
            api("/api/alerts/api/v2/silence/" + encodeURIComponent(s.id), { method: "DELETE" }).then(load, function (e) { list.insertBefore(errorBox(e), list.firstChild); });
          } }, "Expire") : null));
      });
    }, function (e) { clear(list).appendChild(errorBox(e)); });
  }
  return load();
}

/* ---- dashboards (Grafana's dashboard JSON model, the common subset) ---- */

function pageDashboards(main) {
  main.appendChild(h("h1", null, "Dashboards"));
  return api("/api/ui/dashboards").then(function (j) {
    var mine = j.dashboards.filter(function (d) { return !d.builtin; }), builtin = j.dashboards.filter(function (d) { return d.builtin; });
    function list(ds) { return h("ul", { "class": "dash-list" }, ds.map(function (d) { return h("li", null, link("/dashboards/" + encodeURIComponent(d.uid), d.title), h("span", { "class": "muted" }, " " + d.uid)); })); }
    if (mine.length) { main.appendChild(h("h2", null, "From the stack file")); main.appendChild(list(mine)); }
    main.appendChild(h("h2", null, "Built in, one per role"));
    main.appendChild(list(builtin));
  });
}

function grafanaTime(s, now) {
  if (s === undefined || s === null || s === "") return NaN;
  if (s === "now") return now;
  var m = /^now-(.+?)(?:\/[a-z])?$/.exec(s);
  if (m) return now - parseDur(m[1]);
  if (/^\d+$/.test(s)) return parseInt(s, 10) / 1000;
  return Date.parse(s) / 1000;
}

function dsType(ds, model) {
  if (!ds) return null;
  if (typeof ds === "object") return ds.type || (ds.uid && /loki/i.test(ds.uid) ? "loki" : null);
  var m = /^\$\{(.+)\}$/.exec(ds);
  if (m) { var inp = (model.__inputs || []).filter(function (x) { return x.name === m[1]; })[0]; if (inp) return inp.pluginId; }
  return /loki/i.test(ds) ? "loki" : "prometheus";
}

function regexEscape(s) { return String(s).replace(/[.*+?^${}()|[\]\\]/g, "\\$&"); }

function resolveVar(v, model, tr) {
  var q = typeof v.query === "object" && v.query ? (v.query.query || v.query.expr || "") : (v.query || v.definition || "");
  var p;
  if (v.type === "custom") {
    p = Promise.resolve(q ? q.split(/,(?![^{]*\})/).map(function (x) { x = x.trim(); var kv = x.split(" : "); return kv.length === 2 ? kv[1] : x; }).filter(Boolean)
      : (v.options || []).map(function (o) { return o.value; }));
  } else if (v.type === "constant" || v.type === "textbox") {
    p = Promise.resolve([q || (v.current && v.current.value) || ""]);
  } else if (v.type === "interval") {
    p = Promise.resolve(q.split(",").map(function (x) { return x.trim(); }).filter(Boolean));
  } else if (v.type === "query") {
    var loki2 = dsType(v.datasource, model) === "loki";
    q = interpolate(q, model._vars, tr, 60);
    var m;
    if ((m = /^\s*label_values\(\s*([a-zA-Z_]\w*)\s*\)\s*$/.exec(q))) {
      p = loki2 ? loki("label/" + m[1] + "/values", {}) : prom("label/" + m[1] + "/values", { start: Math.floor(tr.start), end: Math.ceil(tr.end) });
    } else if ((m = /^\s*label_values\(\s*(.+)\s*,\s*([a-zA-Z_]\w*)\s*\)\s*$/.exec(q))) {
      p = loki2 ? loki("label/" + m[2] + "/values", { query: m[1] }) : prom("label/" + m[2] + "/values", { "match[]": m[1], start: Math.floor(tr.start), end: Math.ceil(tr.end) });
    } else if ((m = /^\s*metrics\((.*)\)\s*$/.exec(q))) {
      var re = new RegExp(m[1]);
      p = prom("label/__name__/values", {}).then(function (ns) { return ns.filter(function (n) { return re.test(n); }); });
    } else if ((m = /^\s*query_result\((.*)\)\s*$/.exec(q))) {
      p = prom("query", { query: m[1], time: tr.end.toFixed(3) }).then(function (d) { return d.result.map(function (s) { return seriesName(s.metric) + " " + s.value[1] + " " + s.value[0]; }); });
    } else {
      p = Promise.resolve([]);
    }
  } else {
    p = Promise.resolve([]);
  }
  return p.then(function (vals) {
    vals = (vals || []).map(String);
    if (v.regex) {
      var rm = /^\/(.*)\/([a-z]*)$/.exec(v.regex), re = rm ? new RegExp(rm[1], rm[2]) : new RegExp(v.regex);
      vals = vals.map(function (x) { var mm = re.exec(x); return mm ? (mm[1] !== undefined ? mm[1] : mm[0]) : null; }).filter(function (x) { return x !== null; });
    }
    var seen = {};
    vals = vals.filter(function (x) { return seen[x] ? false : (seen[x] = true); });
    if (v.sort === 1 || v.sort === 5) vals.sort(); else if (v.sort === 2 || v.sort === 6) vals.sort().reverse();
    return vals;
  });
}

/* Grafana's variable syntax: $var, ${var}, ${var:format}, [[var]], and the built-ins */
function interpolate(expr, vars, tr, step) {
  var rate = Math.max(step + 15, 60);
  var builtins = { __interval: fmtDur(step) || step + "s", __interval_ms: String(step * 1000), __rate_interval: fmtDur(rate),
                   __range: fmtDur(Math.round(tr.range)), __range_s: String(Math.round(tr.range)), __range_ms: String(Math.round(tr.range * 1000)) };
  function value(name, fmt) {
    if (builtins[name] !== undefined) return builtins[name];
    var v = vars && vars[name];
    if (!v) return null;
    var vals = v.selected;
    if (v.all) { if (v.allValue) return v.allValue; vals = v.values; }
    if (vals.length === 1 && fmt !== "regex") return vals[0];
    if (fmt === "csv") return vals.join(",");
    if (fmt === "pipe") return vals.join("|");
    return vals.length ? "(" + vals.map(regexEscape).join("|") + ")" : "";
  }
  return String(expr).replace(/\$\{([\w]+)(?::([\w]+))?\}|\[\[([\w]+)\]\]|\$([a-zA-Z_]\w*)/g, function (all, a, fmt, b, c) {
    var r = value(a || b || c, fmt);
    return r === null ? all : r;
  });
}

function flattenPanels(panels) {
  var out = [];
  (panels || []).forEach(function (p) {
    out.push(p);
    if (p.type === "row" && p.panels && p.panels.length) p.panels.forEach(function (c) { out.push(c); });
  });
  return out.sort(function (a, b) { var ga = a.gridPos || {}, gb = b.gridPos || {}; return (ga.y || 0) - (gb.y || 0) || (ga.x || 0) - (gb.x || 0); });
}

function thresholdColor(v, fc) {
  var steps = fc && fc.thresholds && fc.thresholds.steps, color = null;
  (steps || []).forEach(function (s) { if (s.value === null || s.value === undefined || v >= s.value) color = s.color; });
  var named = { green: "#16a34a", red: "#dc2626", yellow: "#ca8a04", orange: "#ea580c", blue: "#2563eb", purple: "#7c3aed", "dark-red": "#991b1b", "semi-dark-green": "#15803d" };
  return color ? (named[color] || color) : "#1f2937";
}

function gaugeSVG(v, min, max, color, text) {
  var f = Math.max(0, Math.min(1, (v - min) / ((max - min) || 1)));
  var a = Math.PI * (1 - f), x = 60 + 48 * Math.cos(a), y = 60 - 48 * Math.sin(a);
  return svg("svg", { viewBox: "0 0 120 72", width: "100%", height: "100%" },
    svg("path", { d: "M 12 60 A 48 48 0 0 1 108 60", fill: "none", stroke: "#e5e7eb", "stroke-width": 10 }),
    svg("path", { d: "M 12 60 A 48 48 0 0 1 " + x.toFixed(2) + " " + y.toFixed(2), fill: "none", stroke: color, "stroke-width": 10 }),
    svg("text", { x: 60, y: 58, "text-anchor": "middle", "font-size": 15, "font-weight": 600, fill: "#1f2937", text: text }));
}

function panelQueries(p, model, tr, step) {
  var isLoki = p.type === "logs" || dsType(p.datasource, model) === "loki";
  return (p.targets || []).filter(function (t) { return !t.hide && (t.expr || t.query); }).map(function (t) {
    var tl = dsType(t.datasource, model);
    return { expr: interpolate(t.expr || t.query, model._vars, tr, step), legend: t.legendFormat, loki: tl ? tl === "loki" : isLoki, instant: t.instant, refId: t.refId };
  });
}

function drawPanel(box, p, model, tr) {
  var body = box.querySelector(".pbody");
  clear(body);
  var fc = (p.fieldConfig && p.fieldConfig.defaults) || {};
  var unit = fc.unit || (p.yaxes && p.yaxes[0] && p.yaxes[0].format) || (p.format) || "";
  var width = body.clientWidth || 400;
  var step = Math.max(p.interval ? parseDur(p.interval) || 1 : 1, stepFor(tr.range, Math.min(width, p.maxDataPoints || width)));
  var qs5 = panelQueries(p, model, tr, step);
  var t = p.type;
  if (t === "text") { body.appendChild(h("div", { "class": "text" }, (p.options && p.options.content) || p.content || "")); return Promise.resolve(); }
  if (!qs5.length) { body.appendChild(h("p", { "class": "muted" }, "No queries.")); return Promise.resolve(); }
  function range(q) {
    var params = { query: q.expr, start: tr.start.toFixed(3), end: tr.end.toFixed(3), step: step };
    if (q.loki) return loki("query_range", { query: q.expr, start: Math.floor(tr.start * 1e9).toString(), end: Math.ceil(tr.end * 1e9).toString(), step: step + "s", limit: 500 });
    return prom("query_range", params);
  }
  function instant(q) {
    if (q.loki) return loki("query", { query: q.expr, time: Math.ceil(tr.end * 1e9).toString() });
    return prom("query", { query: q.expr, time: tr.end.toFixed(3) });
  }
  var fail = function (e) { clear(body).appendChild(errorBox(e)); };
  if (t === "timeseries" || t === "graph" || t === "barchart") {
    return Promise.all(qs5.map(function (q) { return range(q).then(function (d) { return d.result.map(function (s) { return { s: s, legend: q.legend }; }); }); })).then(function (all) {
      var flat = [].concat.apply([], all);
      clear(body);
      if (!flat.length) { body.appendChild(h("p", { "class": "muted" }, "No data.")); return; }
      var a = alignMatrix(flat.map(function (x) { return x.s; }));
      flat.forEach(function (x, i) { if (x.legend) a.series[i + 1].label = seriesName(x.s.metric, x.legend); });
      var legendOn = !(p.options && p.options.legend && p.options.legend.showLegend === false);
      var hgt = Math.max(60, body.clientHeight - (legendOn ? 24 + 18 * Math.min(flat.length, 3) : 8));
      timeChart(body, a.data, a.series, { unit: unit, height: hgt, legend: legendOn, bars: t === "barchart" });
      body.setAttribute("data-series", flat.length);
    }, fail);
  }
  if (t === "stat" || t === "singlestat" || t === "gauge" || t === "bargauge") {
    return Promise.all(qs5.map(function (q) { return instant(q).then(function (d) { return d.result.map(function (s) { return { s: s, legend: q.legend }; }); }); })).then(function (all) {
      var flat = [].concat.apply([], all);
      clear(body);
      if (!flat.length) { body.appendChild(h("div", { "class": "stat muted" }, "No data")); return; }
      var wrap = h("div", { "class": "stat-multi" });
      flat.forEach(function (x) {
        var v = parseFloat(x.s.value ? x.s.value[1] : (x.s.values || [[0, NaN]]).slice(-1)[0][1]);
        var txt = fmtNum(v, unit), color = thresholdColor(v, fc);
        var label = flat.length > 1 ? seriesName(x.s.metric, x.legend) : "";
        if (t === "gauge" || t === "bargauge") {
          var mn = fc.min !== undefined ? fc.min : 0, mx = fc.max !== undefined ? fc.max : (unit === "percent" ? 100 : unit === "percentunit" ? 1 : Math.max(1, v));
          wrap.appendChild(h("div", { style: { height: "100%", minWidth: "120px", flex: "1" } }, gaugeSVG(v, mn, mx, color, txt), label ? h("div", { "class": "lbl" }, label) : null));
        } else {
          wrap.appendChild(h("div", null, h("div", { "class": "stat", style: { color: color } }, txt), label ? h("div", { "class": "lbl" }, label) : null));
        }
      });
      body.appendChild(wrap);
      body.setAttribute("data-series", flat.length);
    }, fail);
  }
  if (t === "table") {
    return Promise.all(qs5.map(function (q) { return instant(q); })).then(function (ds) {
      clear(body);
      var rows = [].concat.apply([], ds.map(function (d) { return d.result; }));
      var keys = {};
      rows.forEach(function (s) { for (var k in s.metric) if (k !== "__name__") keys[k] = 1; });
      var cols = Object.keys(keys).sort();
      body.appendChild(h("table", null, h("tr", null, cols.map(function (c) { return h("th", null, c); }), h("th", null, "Value")),
        rows.map(function (s) { return h("tr", null, cols.map(function (c) { return h("td", null, s.metric[c] || ""); }), h("td", { "class": "num" }, fmtNum(parseFloat(s.value ? s.value[1] : NaN), unit))); })));
      body.setAttribute("data-series", rows.length);
    }, fail);
  }
  if (t === "logs") {
    return logLines(body, qs5[0].expr, tr, (p.options && p.options.maxLines) || p.maxDataPoints || 100);
  }
  body.appendChild(h("p", { "class": "muted" }, "Panel type \u201c" + t + "\u201d is not drawn by this console."));
  return Promise.resolve();
}

function pageDashboard(main, uid, q) {
  var t0 = performance.now();
  return api("/api/ui/dashboards/" + encodeURIComponent(uid)).then(function (model) {
    var now = Date.now() / 1000;
    var tr;
    if (q.get("range") || q.get("from")) tr = timeRange(q, "6h");
    else {
      var f = grafanaTime(model.time && model.time.from, now), to = grafanaTime(model.time && model.time.to, now);
      tr = f < to ? { start: f, end: to, range: to - f, label: (model.time.from + " → " + model.time.to) } : timeRange(q, "6h");
    }
    var relative = !q.get("from");
    var rangeVal = q.get("range") || (model.time && /^now-/.test(model.time.from) && model.time.to === "now" ? model.time.from.slice(4) : "6h");
    main.appendChild(h("h1", null, model.title || uid));
    var varsBar = h("div", { "class": "vars" });
    main.appendChild(varsBar);
    var grid = h("div", { "class": "dash-grid", id: "dashboard" });
    main.appendChild(grid);
    model._vars = {};
    var vlist = ((model.templating && model.templating.list) || []).filter(function (v) { return v.type !== "datasource" && v.type !== "adhoc"; });
    var boxes = [], rowBoxes = [];
    flattenPanels(model.panels).forEach(function (p) {
      var g = p.gridPos || { x: 0, y: 0, w: 12, h: 8 };
      var box = h("div", { "class": "panel" + (p.type === "row" ? " rowpanel" : ""), "data-type": p.type, "data-title": p.title || "",
        style: { gridColumn: ((g.x || 0) + 1) + " / span " + Math.max(1, Math.min(24, g.w || 12)), gridRow: ((g.y || 0) + 1) + " / span " + Math.max(1, g.h || (p.type === "row" ? 1 : 8)) } },
        h("div", { "class": "ptitle", title: p.description || "" }, ""), p.type === "row" ? null : h("div", { "class": "pbody" }));
      grid.appendChild(box);
      (p.type !== "row" ? boxes : rowBoxes).push([box, p]);
    });
    function drawAll() {
      boxes.concat(rowBoxes).forEach(function (b) { b[0].querySelector(".ptitle").textContent = interpolate(b[1].title || "", model._vars, tr, 60); });
      if (relative) { var n = Date.now() / 1000; tr = { start: n - tr.range, end: n, range: tr.range, label: tr.label }; }
      return Promise.all(boxes.map(function (b) { return drawPanel(b[0], b[1], model, tr).catch(function () { /* shown in the panel */ }); }));
    }
    function setupVars() {
      return vlist.reduce(function (chain, v) {
        return chain.then(function () {
          return resolveVar(v, model, tr).then(function (vals) {
            var fromURL = q.getAll("var-" + v.name);
            var cur = v.current && v.current.value !== undefined ? [].concat(v.current.value) : [];
            var sel = fromURL.length ? fromURL : cur.filter(function (x) { return x === "$__all" || vals.indexOf(x) >= 0; });
            if (!sel.length) sel = v.includeAll ? ["$__all"] : vals.slice(0, 1);
            var all = sel.indexOf("$__all") >= 0;
            model._vars[v.name] = { values: vals, selected: all ? vals : sel, all: all, allValue: v.allValue };
            if (v.hide === 2) return;
            var s = h("select", { "data-var": v.name, multiple: v.multi ? true : null, onchange: function () {
              var chosen = Array.prototype.filter.call(s.options, function (o) { return o.selected; }).map(function (o) { return o.value; });
              var params = new URLSearchParams(location.search);
              params.delete("var-" + v.name);
              chosen.forEach(function (c) { params.append("var-" + v.name, c); });
              history.replaceState(null, "", location.pathname + "?" + params.toString());
              render();
            } });
            if (v.includeAll) s.appendChild(h("option", { value: "$__all", selected: all }, "All"));
            vals.forEach(function (x) { s.appendChild(h("option", { value: x, selected: !all && sel.indexOf(x) >= 0 }, x)); });
            varsBar.appendChild(h("label", null, v.label || v.name, s));
          });
        });
      }, Promise.resolve());
    }
    varsBar.appendChild(rangeSelect(rangeVal, function (r) { var p = new URLSearchParams(location.search); p.set("range", r); p.delete("from"); p.delete("to"); history.pushState(null, "", location.pathname + "?" + p.toString()); render(); }));
    var refresh = q.get("refresh") || model.refresh;
    if (refresh && parseDur(refresh) >= 5) varsBar.appendChild(h("span", { "class": "muted" }, "refresh every " + refresh));
    return setupVars().then(drawAll).then(function () {
      var ms = performance.now() - t0;
      performance.mark("dashboard-drawn");
      grid.setAttribute("data-drawn-ms", ms.toFixed(1));
      if (refresh && parseDur(refresh) >= 5) every(parseDur(refresh) * 1000, drawAll);
    });
  });
}

/* ---- routing ---- */

function render() {
  teardown();
  var main = clear(document.getElementById("main"));
  document.body.removeAttribute("data-page-ready");
  var path = location.pathname, q = new URLSearchParams(location.search), m, p;
  Array.prototype.forEach.call(document.querySelectorAll("header nav a"), function (a) {
    var href = a.getAttribute("href");
    a.classList.toggle("active", href === "/" ? path === "/" || path.indexOf("/services/") === 0 : path.indexOf(href) === 0 || (href === "/explore/traces" && path.indexOf("/trace/") === 0));
  });
  var titles = { "/": "Stack" };
  document.title = (titles[path] || path.split("/").filter(Boolean).map(decodeURIComponent).join(" · ")) + " · cairn console";
  try {
    if (path === "/") p = pageStack(main);
    else if ((m = /^\/services\/([^/]+)$/.exec(path))) p = pageService(main, decodeURIComponent(m[1]));
    else if (path === "/explore/metrics") p = pageMetrics(main, q);
    else if (path === "/explore/logs") p = pageLogs(main, q);
    else if (path === "/explore/traces") p = pageTraces(main, q);
    else if ((m = /^\/trace\/([0-9a-fA-F]+)$/.exec(path))) p = pageTrace(main, m[1]);
    else if (path === "/alerts") p = pageAlerts(main);
    else if (path === "/silences") p = pageSilences(main, q);
    else if (path === "/dashboards") p = pageDashboards(main);
    else if ((m = /^\/dashboards\/([^/]+)$/.exec(path))) p = pageDashboard(main, decodeURIComponent(m[1]), q);
    else main.appendChild(errorBox("No page here."));
  } catch (e) { main.appendChild(errorBox(e)); }
  Promise.resolve(p).catch(function (e) { main.appendChild(errorBox(e)); }).then(function () { document.body.setAttribute("data-page-ready", "1"); });
}

document.addEventListener("click", function (e) {
  var a = e.target.closest ? e.target.closest("a[data-nav]") : null;
  if (!a || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  var url = new URL(a.getAttribute("href"), location.href);
  if (url.origin !== location.origin) return;
  e.preventDefault();
  history.pushState(null, "", url.pathname + url.search);
  render();
  window.scrollTo(0, 0);
});
window.addEventListener("popstate", render);

api("/api/ui/session").then(function (s) {
  session = s;
  var who = document.getElementById("who");
  if (s.auth) {
    who.appendChild(h("span", { id: "user" }, s.user));
    who.appendChild(h("button", { id: "logout", onclick: function () {
      api("/logout", { method: "POST" }).catch(function () { return null; }).then(function () { location.href = "/login"; });
    } }, "Log out"));
  }
}, function () { /* the page shows the error itself */ }).then(render);

})();
