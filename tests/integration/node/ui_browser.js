// ui_browser.js - drives the console in Debian's Chromium (headless, through
// playwright-core, which downloads no browser) and prints what it saw as JSON
// for test_ui.py to assert on. Screenshots go to SHOTS (a directory).
//
//   node ui_browser.js pages BASE SHOTS TRACE_ID     every page, the stack map,
//                                                   a graph, logs, a trace, a silence
//   node ui_browser.js auth BASE SHOTS USER PASSWORD login, logout, CSRF refusal
//   node ui_browser.js bench BASE                    transfer sizes and timings
"use strict";
const { chromium } = require("playwright-core");
const fs = require("fs");
const path = require("path");

const BROWSER = process.env.CHROMIUM || "/usr/bin/chromium";
const [mode, base, shots, a1, a2] = process.argv.slice(2);

async function ready(page, timeout) {
  await page.waitForSelector("body[data-page-ready]", { timeout: timeout || 20000 });
}

async function visit(page, url, errors, name) {
  const before = errors.length;
  await page.goto(base + url, { waitUntil: "load" });
  await ready(page);
  if (shots && name) await page.screenshot({ path: path.join(shots, name + ".png"), fullPage: true });
  return errors.slice(before);
}

// How many pixels of the chart's canvas differ from its background.
async function drawnPixels(page, sel) {
  return page.$eval(sel, (c) => {
    const ctx = c.getContext("2d");
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && !(d[i] > 240 && d[i + 1] > 240 && d[i + 2] > 240)) n++;
    return n;
  });
}

async function pages() {
  const browser = await chromium.launch({ executablePath: BROWSER, args: ["--no-sandbox"] });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  const out = { errors: {} };

  // every page loads without a console error
  const list = {
    stack: "/", service: "/services/lb", metrics: "/explore/metrics?query=" + encodeURIComponent("sum by (job) (rate(edge_requests_total[1m]))") + "&range=15m",
    logs: "/explore/logs?query=" + encodeURIComponent('{service="lb"}') + "&range=15m", traces: "/explore/traces?service=cdn&range=15m&limit=500",
    traceql: "/explore/traces?q=" + encodeURIComponent('{ resource.service.name = "lb" }'), trace: "/trace/" + a1, alerts: "/alerts",
    silences: "/silences", dashboards: "/dashboards", dashboard: "/dashboards/cairn-edge?range=15m",
  };
  for (const [name, url] of Object.entries(list)) out.errors[name] = await visit(page, url, errors, name);

  // the stack map: every service, with its state (the map refreshes every 5 s)
  await visit(page, "/", errors, null);
  const deadline = Date.now() + 20000;
  do {
    out.services = await page.$$eval(".svc", (els) => els.map((e) => [e.dataset.service, e.dataset.state]));
    if (out.services.length && out.services.every((s) => s[1] === "ready")) break;
    await page.waitForTimeout(500);
  } while (Date.now() < deadline);
  out.pathColumns = await page.$$eval("#request-path .col", (cs) => cs.map((c) => Array.from(c.querySelectorAll(".svc")).map((e) => e.dataset.service)));
  await page.click('.svc[data-service="lb"]');
  await ready(page);
  out.clickedTo = new URL(page.url()).pathname;

  // a PromQL query draws a graph: data on the canvas, the series in the legend
  await visit(page, list.metrics, errors, null);
  out.metricsSeries = Number(await page.$eval("#result .graph", (e) => e.getAttribute("data-series") || 0));
  out.metricsPixels = await drawnPixels(page, "#result .graph canvas");
  out.legend = await page.$$eval(".u-legend .u-series th", (ths) => ths.slice(1).map((t) => t.textContent.trim()));
  // legend toggling hides a series
  if (out.legend.length) {
    await page.click(".u-legend .u-series:nth-child(2) th");
    out.toggled = await page.$eval(".u-legend .u-series:nth-child(2)", (e) => e.classList.contains("u-off"));
  }
  // zoom by dragging: the URL takes the new range
  const over = await page.$(".u-over");
  const box = await over.boundingBox();
  await page.mouse.move(box.x + box.width * 0.3, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.7, box.y + box.height / 2, { steps: 8 });
  await page.mouse.up();
  await page.waitForFunction(() => location.search.includes("from="), null, { timeout: 5000 });
  out.zoomURL = new URL(page.url()).search;
  await ready(page);
  // completion of metric names
  await visit(page, "/explore/metrics", errors, null);
  await page.click("textarea.query");
  await page.keyboard.type("edge_requests_t");
  await page.waitForSelector(".complete:not([hidden]) li", { timeout: 5000 });
  out.completions = await page.$$eval(".complete:not([hidden]) li", (ls) => ls.map((l) => l.firstChild.textContent));
  await page.keyboard.press("Enter");
  await page.keyboard.type("{co");
  await page.waitForFunction(() => Array.from(document.querySelectorAll(".complete li")).some((l) => l.firstChild.textContent === "code"), null, { timeout: 5000 });
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => Array.from(document.querySelectorAll(".complete:not([hidden]) li")).some((l) => /^\dxx$/.test(l.firstChild.textContent)), null, { timeout: 5000 });
  out.valueCompletions = await page.$$eval(".complete:not([hidden]) li", (ls) => ls.map((l) => l.firstChild.textContent));
  // the table view
  await visit(page, list.metrics + "&tab=table", errors, "metrics-table");
  out.tableRows = await page.$$eval("#result table tr", (r) => r.length - 1);

  // a LogQL query lists lines of the lb, with a volume histogram
  await visit(page, list.logs, errors, null);
  out.logLines = await page.$$eval("#lines .logline", (ls) => ls.length);
  out.logLabels = await page.$$eval("#lines .logline .labels", (ls) => ls.slice(0, 5).map((l) => l.textContent));
  out.volumePixels = await drawnPixels(page, "#volume canvas").catch(() => 0);
  out.traceLinks = await page.$$eval("#lines a.trace-link", (ls) => ls.slice(0, 3).map((l) => l.getAttribute("href")));
  // live tail through the console's WebSocket proxy
  await page.click("#tail");
  await page.waitForSelector("#result[data-tailed]", { timeout: 15000 }).catch(() => null);
  out.tailed = Number(await page.$eval("#result", (e) => e.getAttribute("data-tailed") || 0));
  await page.click("#tail");

  // the trace of a request through cdn -> lb -> app, as a waterfall
  await visit(page, "/trace/" + a1, errors, "trace-waterfall");
  out.waterfall = await page.$$eval("#waterfall .wf-row", (rs) => rs.map((r) => r.dataset.service));
  if (out.waterfall.length) {
    await page.click("#waterfall .wf-row:nth-child(3)");
    out.details = await page.$$eval("#span-details td", (t) => t.map((x) => x.textContent));
  }
  await visit(page, list.traces, errors, null);
  out.traceResults = await page.$$eval("#trace-results tr[data-trace]", (r) => r.map((x) => x.dataset.trace));
  out.graphNodes = await page.$$eval("#service-graph text", (t) => t.map((x) => x.textContent)).catch(() => []);
  await visit(page, list.traceql, errors, null);
  out.traceqlResults = await page.$$eval("#trace-results tr[data-trace]", (r) => r.length);

  // a dashboard: panels drawn
  await visit(page, list.dashboard, errors, null);
  out.dashPanels = await page.$$eval("#dashboard .panel[data-type='timeseries']", (ps) => ps.length);
  out.dashDrawn = await page.$$eval("#dashboard .panel[data-type='timeseries'] canvas", (ps) => ps.length);

  // a dashboard exported from Grafana, as the stack file names it
  await visit(page, "/dashboards/exported-lb", errors, "dashboard-exported");
  await page.waitForFunction(() => document.querySelector("#dashboard .panel[data-type='logs'] .loglines, #dashboard .panel[data-type='logs'] p"), null, { timeout: 10000 });
  out.exported = await page.evaluate(() => {
    const panels = {};
    document.querySelectorAll("#dashboard .panel").forEach((p) => { panels[p.dataset.type] = (panels[p.dataset.type] || 0) + 1; });
    return {
      panels,
      drawn: document.querySelectorAll("#dashboard .panel[data-type='timeseries'] canvas").length,
      logLines: document.querySelectorAll("#dashboard .panel[data-type='logs'] .logline").length,
      vars: Array.from(document.querySelectorAll(".vars select[data-var]")).map((s) => s.dataset.var),
      stat: (document.querySelector("#dashboard .panel[data-type='stat'] .stat") || {}).textContent,
    };
  });

  // a silence made in the UI
  await visit(page, "/silences?matchers=" + encodeURIComponent('alertname="ConsoleTest", job="lb"'), errors, null);
  await page.fill("#comment", "made by the console test");
  await page.click("#new-silence button[type=submit]");
  await page.waitForSelector("#created", { timeout: 10000 });
  out.silenceID = await page.$eval("#created .mono", (e) => e.textContent);
  await page.waitForSelector(`[data-silence="${out.silenceID}"]`, { timeout: 10000 });
  if (shots) await page.screenshot({ path: path.join(shots, "silence-created.png"), fullPage: true });
  out.allErrors = errors;
  await browser.close();
  return out;
}

async function auth() {
  const browser = await chromium.launch({ executablePath: BROWSER, args: ["--no-sandbox"] });
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const out = {};
  await page.goto(base + "/alerts");
  out.redirected = new URL(page.url()).pathname + new URL(page.url()).search;
  await page.fill("input[name=user]", a1);
  await page.fill("input[name=password]", "wrong" + a2);
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  out.afterWrong = new URL(page.url()).pathname;
  out.errorShown = await page.$eval("#error", (e) => !e.hidden);
  if (shots) await page.screenshot({ path: path.join(shots, "login-refused.png") });
  await page.fill("input[name=user]", a1);
  await page.fill("input[name=password]", a2);
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  await ready(page);
  out.afterLogin = new URL(page.url()).pathname;
  await page.waitForSelector("#user");
  out.user = await page.$eval("#user", (e) => e.textContent);
  out.cookie = (await page.context().cookies()).map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite }));
  out.cookieVisibleToScript = await page.evaluate(() => document.cookie.includes("cairn_session"));
  if (shots) await page.screenshot({ path: path.join(shots, "logged-in.png") });
  // CSRF: a state-changing call without the token is refused, with it accepted
  out.csrf = await page.evaluate(async () => {
    const body = JSON.stringify({ matchers: [{ name: "alertname", value: "CsrfTest", isRegex: false, isEqual: true }],
      startsAt: new Date().toISOString(), endsAt: new Date(Date.now() + 3600e3).toISOString(), createdBy: "t", comment: "csrf" });
    const bad = await fetch("/api/alerts/api/v2/silences", { method: "POST", headers: { "Content-Type": "application/json" }, body });
    const wrong = await fetch("/api/alerts/api/v2/silences", { method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": "0".repeat(64) }, body });
    const s = await (await fetch("/api/ui/session")).json();
    const good = await fetch("/api/alerts/api/v2/silences", { method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": s.csrf }, body });
    return { without: bad.status, wrong: wrong.status, with: good.status };
  });
  await Promise.all([page.waitForURL("**/login"), page.click("#logout")]);
  out.afterLogout = new URL(page.url()).pathname;
  out.apiAfterLogout = await page.evaluate(async () => (await fetch("/api/ui/stack")).status);
  out.errors = errors;
  await browser.close();
  return out;
}

async function bench() {
  const browser = await chromium.launch({ executablePath: BROWSER, args: ["--no-sandbox"] });
  const out = {};
  const ctx = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
  const page = await ctx.newPage();
  const cdp = await ctx.newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.setCacheDisabled", { cacheDisabled: true });
  let bytes = 0;
  cdp.on("Network.loadingFinished", (e) => { bytes += e.encodedDataLength; });
  // the transferred size of a full load of the metrics explorer with a graph
  const q = "/explore/metrics?query=" + encodeURIComponent(a2 || "sum by (job) (rate(process_cpu_seconds_total[1m]))") + "&range=1h";
  out.firstGraphMs = [];
  out.transferBytes = [];
  for (let i = 0; i < 5; i++) {
    bytes = 0;
    await page.goto("about:blank");
    const t0 = Date.now();
    await page.goto(base + q);
    await page.waitForSelector("#result .graph canvas", { timeout: 30000 });
    out.firstGraphMs.push(Date.now() - t0);
    await ready(page);
    await page.waitForTimeout(300);
    out.transferBytes.push(bytes);
  }
  out.navigation = await page.evaluate(() => {
    const n = performance.getEntriesByType("navigation")[0];
    return { domContentLoaded: n.domContentLoadedEventEnd, load: n.loadEventEnd };
  });
  // a dashboard of many panels over 24 h, drawn
  const ms = [];
  for (let i = 0; i < 5; i++) {
    await page.goto(base + "/dashboards/" + (a1 || "bench-20") + "?range=24h");
    await page.waitForSelector("#dashboard[data-drawn-ms]", { timeout: 60000 });
    ms.push(Number(await page.$eval("#dashboard", (e) => e.getAttribute("data-drawn-ms"))));
  }
  out.dashboardMs = ms;
  out.dashboardCanvases = await page.$$eval("#dashboard canvas", (c) => c.length);
  await browser.close();
  return out;
}

(async () => {
  if (shots && shots !== "-") fs.mkdirSync(shots, { recursive: true });
  const run = { pages, auth, bench }[mode];
  if (!run) { console.error("usage: ui_browser.js pages|auth|bench BASE ..."); process.exit(2); }
  const out = await run();
  process.stdout.write(JSON.stringify(out) + "\n");
})().catch((e) => { console.error(e && e.stack ? e.stack : String(e)); process.exit(1); });
