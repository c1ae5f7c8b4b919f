"""The console (`role: ui`): its pages in Debian's Chromium (playwright-core from
npm, no downloaded browser), against the default stack with traffic sent through
it; its HTTP contract (CSP, caching, gzip, the proxy, CSRF) with requests; login
with users:. Screenshots of each page are kept under build/ui-screenshots/."""
import json
import os
import re
import shutil
import subprocess

import pytest
import requests

from conftest import ROOT, free_port, run_cairn, wait_for, write_stack

NODE_DIR = os.path.join(ROOT, "tests", "integration", "node")
SHOTS = os.path.join(ROOT, "build", "ui-screenshots")
CONSOLE = "http://127.0.0.1:3000"


def browser(*args, timeout=240):
    r = subprocess.run(["node", os.path.join(NODE_DIR, "ui_browser.js"), *args], cwd=NODE_DIR,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"browser run failed:\n{r.stderr[-4000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def default_stack_with(tmp_path, console_extra):
    """The default stack as `cairn config default` prints it, with keys added to the
    console's section (indented under it)."""
    text = run_cairn(["config", "default"]).stdout
    marker = '    listen: ["127.0.0.1:3000"]\n'
    assert marker in text
    return write_stack(tmp_path, text.replace(marker, marker + console_extra))


def test_console_in_a_browser(start, tmp_path):
    shutil.copy(os.path.join(ROOT, "tests", "integration", "data", "grafana-dashboard.json"), tmp_path)
    stack = default_stack_with(tmp_path, "    dashboards: [grafana-dashboard.json]\n")
    start(["up", "-c", stack])
    wait_for(lambda: requests.get(f"{CONSOLE}/-/ready", timeout=2).status_code == 200, timeout=30, what="the console")
    wait_for(lambda: requests.get("http://127.0.0.1:8080/api/hello", timeout=2).status_code == 200, timeout=30,
             what="the request path")
    # traffic through cdn -> lb -> app, one request with a trace id we know
    tid = "0af7651916cd43dd8448eb211c80319c"
    r = requests.get("http://127.0.0.1:8080/api/hello", timeout=5,
                     headers={"traceparent": f"00-{tid}-b7ad6b7169203331-01"})
    assert r.status_code == 200
    for _ in range(40):
        requests.get("http://127.0.0.1:8080/api/hello", timeout=5)
        requests.get("http://127.0.0.1:8080/static/style.css", timeout=5)

    def trace_services():
        t = requests.get(f"http://127.0.0.1:16686/api/traces/{tid}", timeout=5)
        if t.status_code != 200:
            return None
        t = t.json()["data"][0]
        return {t["processes"][s["processID"]]["serviceName"] for s in t["spans"]}
    svcs = wait_for(lambda: (s := trace_services()) and {"cdn", "lb"} <= s and any(x.startswith("app-") for x in s) and s,
                    timeout=30, what="the trace through cdn, lb and an app")
    wait_for(lambda: requests.get("http://127.0.0.1:3100/loki/api/v1/query_range", timeout=5,
                                  params={"query": '{service="lb"}', "limit": 5}).json()["data"]["result"],
             timeout=30, what="the lb's lines in the log store")
    wait_for(lambda: requests.get("http://127.0.0.1:9090/api/v1/query", timeout=5,
                                  params={"query": 'edge_requests_total{job="cdn"}'}).json()["data"]["result"],
             timeout=40, what="the edge's metrics scraped")
    # a second scrape, so that rate() has two points
    wait_for(lambda: requests.get("http://127.0.0.1:9090/api/v1/query", timeout=5,
                                  params={"query": 'rate(edge_requests_total{job="cdn"}[1m]) > 0'}).json()["data"]["result"],
             timeout=40, what="two scrapes of the edge")
    wait_for(lambda: requests.get(f"{CONSOLE}/api/ui/stack", timeout=5).json()["services"] and
             all(s["state"] == "ready" for s in requests.get(f"{CONSOLE}/api/ui/stack", timeout=5).json()["services"]),
             timeout=30, what="every service ready")

    os.makedirs(SHOTS, exist_ok=True)
    out = browser("pages", CONSOLE, SHOTS, tid)
    # every page loads without a console error
    assert all(not e for e in out["errors"].values()), out["errors"]
    assert not out["allErrors"], out["allErrors"]
    # the stack map: every service up and ready, the request path in order
    names = [n for n, _ in out["services"]]
    assert len(names) == 15 and {"dns", "cdn", "lb", "app-1", "metrics", "logs", "traces", "alerts", "console"} <= set(names)
    assert all(state == "ready" for _, state in out["services"]), out["services"]
    assert out["pathColumns"] == [["dns"], ["cdn"], ["lb"], ["app-1", "app-2", "app-3"]]
    assert out["clickedTo"] == "/services/lb"
    # a PromQL query draws a graph: pixels on the canvas, the series in the legend
    assert out["metricsSeries"] >= 2 and out["metricsPixels"] > 300
    assert any('job="cdn"' in s for s in out["legend"]) and any('job="lb"' in s for s in out["legend"])
    assert out["toggled"] is True
    assert re.search(r"from=\d+(\.\d+)?&to=\d+", out["zoomURL"])
    assert "edge_requests_total" in out["completions"]
    assert out["valueCompletions"] and all(re.fullmatch(r"\dxx", v) for v in out["valueCompletions"])
    assert out["tableRows"] >= 2
    # a LogQL query lists lines of the lb, with the volume histogram drawn
    assert out["logLines"] >= 10 and all("service=lb" in l for l in out["logLabels"])
    assert out["volumePixels"] > 50
    assert out["traceLinks"] and all(re.fullmatch(r"/trace/[0-9a-f]{32}", l) for l in out["traceLinks"])
    assert out["tailed"] > 0
    # the trace opens as a waterfall with spans of the three services
    assert {"cdn", "lb"} <= set(out["waterfall"]) and any(s.startswith("app-") for s in out["waterfall"])
    assert len(out["waterfall"]) >= 4 and "span id" in out["details"]
    assert tid in out["traceResults"]
    assert {"cdn", "lb"} <= set(out["graphNodes"])
    assert out["traceqlResults"] >= 1
    assert out["dashPanels"] >= 4 and out["dashDrawn"] >= 3
    assert out["exported"]["panels"] == {"timeseries": 2, "stat": 1, "gauge": 1, "table": 1, "logs": 1, "row": 2}
    assert out["exported"]["drawn"] >= 2 and out["exported"]["logLines"] > 0 and out["exported"]["vars"] == ["job", "quantile"]
    assert out["exported"]["stat"] == "15"
    # the silence made in the UI is what amtool sees
    r = subprocess.run(["amtool", "--alertmanager.url=http://127.0.0.1:9093", "silence", "query", "-o", "json"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    sil = [s for s in json.loads(r.stdout) if s["id"] == out["silenceID"]]
    assert sil and sil[0]["comment"] == "made by the console test"
    assert {(m["name"], m["value"]) for m in sil[0]["matchers"]} == {("alertname", "ConsoleTest"), ("job", "lb")}
    for page in ("stack", "metrics", "logs", "trace-waterfall", "alerts", "silences", "dashboard"):
        assert os.path.getsize(os.path.join(SHOTS, page + ".png")) > 5000


def console_stack(tmp_path, extra="", with_alerts=True):
    port, am = free_port(), free_port()
    text = f"""
data_dir: data
services:
  console:
    role: ui
    listen: ["127.0.0.1:{port}"]
{extra}"""
    if with_alerts:
        text += f"""
  alerts:
    role: alerts
    listen: ["127.0.0.1:{am}"]
"""
    return write_stack(tmp_path, text), f"http://127.0.0.1:{port}", am


def test_console_http_contract(start, tmp_path):
    stack, base, am = console_stack(tmp_path)
    start(["up", "-c", stack])
    wait_for(lambda: requests.get(f"{base}/-/ready", timeout=2).status_code == 200, timeout=20, what="the console")
    page = requests.get(f"{base}/explore/metrics?query=up", timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["Cache-Control"] == "no-cache"
    assert "<script>" not in page.text                         # no inline script anywhere
    assets = re.findall(r'(?:src|href)="(/assets/[^"]+)"', page.text)
    assert len(assets) >= 4
    for a in assets:
        assert re.fullmatch(r"/assets/[\w.-]+\.[0-9a-f]{12}\.(js|css|svg)", a), a
        r = requests.get(base + a, timeout=5)
        assert r.status_code == 200 and r.headers["Content-Encoding"] == "gzip"
        assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        again = requests.get(base + a, headers={"If-None-Match": r.headers["ETag"]}, timeout=5)
        assert again.status_code == 304
        plain = requests.get(base + a, headers={"Accept-Encoding": "identity"}, timeout=5)
        assert "Content-Encoding" not in plain.headers and plain.content == r.content
    assert requests.get(f"{base}/assets/app.000000000000.js", timeout=5).status_code == 404
    assert requests.get(f"{base}/nothing-here", timeout=5).status_code == 404
    assert requests.post(f"{base}/alerts", timeout=5).status_code in (403, 405)
    # the proxy: the stack's alerts service through the console's origin; no metrics service here
    st = requests.get(f"{base}/api/ui/stack", timeout=5).json()
    assert st["sources"] == {"metrics": False, "logs": False, "jaeger": False, "tempo": False, "alerts": True}
    r = requests.get(f"{base}/api/metrics/api/v1/query?query=up", timeout=5)
    assert r.status_code == 503 and "no metrics service" in r.json()["error"]
    wait_for(lambda: requests.get(f"{base}/api/alerts/api/v2/status", timeout=5).status_code == 200, timeout=10,
             what="the alerts service through the console")
    # CSRF: a state-changing call needs the page's token
    body = {"matchers": [{"name": "alertname", "value": "X", "isRegex": False, "isEqual": True}],
            "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z", "createdBy": "t", "comment": "c"}
    r = requests.post(f"{base}/api/alerts/api/v2/silences", json=body, timeout=5)
    assert r.status_code == 403 and "CSRF" in r.json()["error"]
    token = requests.get(f"{base}/api/ui/session", timeout=5).json()["csrf"]
    r = requests.post(f"{base}/api/alerts/api/v2/silences", json=body, headers={"X-CSRF-Token": token}, timeout=5)
    assert r.status_code == 200 and r.json()["silenceID"]
    sid = r.json()["silenceID"]
    assert any(s["id"] == sid for s in requests.get(f"http://127.0.0.1:{am}/api/v2/silences", timeout=5).json())
    # large answers are gzipped for the browser
    r = requests.get(f"{base}/api/ui/dashboards/cairn-edge", timeout=5)
    assert r.headers.get("Content-Encoding") == "gzip" and r.json()["uid"] == "cairn-edge"
    listing = requests.get(f"{base}/api/ui/dashboards", timeout=5).json()["dashboards"]
    assert {"cairn-edge", "cairn-dns", "cairn-metrics", "cairn-logs", "cairn-traces", "cairn-alerts", "cairn-s3",
            "cairn-registry", "cairn-backup", "cairn-log-agent", "cairn-demo-app", "cairn-ui"} <= {d["uid"] for d in listing}
    # its own metrics
    m = requests.get(f"{base}/metrics", timeout=5).text
    assert re.search(r"^cairn_ui_proxied_requests_total [1-9]", m, re.M)


def test_console_refuses_bad_dashboards_and_users(tmp_path):
    (tmp_path / "bad.json").write_text('{"title": "x", "panels": [}')
    (tmp_path / "nopanels.json").write_text('{"title": "x"}')
    stack, _, _ = console_stack(tmp_path, """    dashboards: [bad.json, nopanels.json, missing.json]
    users:
      - {name: admin, password_hash: "plain"}
""", with_alerts=False)
    r = run_cairn(["check", "-c", stack])
    assert r.returncode != 0
    assert re.search(r"dashboards\[0\]: dashboard bad.json: not JSON: line 1 column \d+", r.stderr), r.stderr
    assert 'dashboards[1]: dashboard nopanels.json: expected a Grafana dashboard: no "panels" list' in r.stderr
    assert "dashboards[2]: cannot read dashboard missing.json" in r.stderr
    assert "password_hash: expected a scrypt ($7$) or yescrypt ($y$) hash" in r.stderr


def test_console_login_logout_and_csrf(start, tmp_path):
    pw = "correct horse battery"
    h = subprocess.run(["mkpasswd", "-m", "scrypt", pw], capture_output=True, text=True, check=True).stdout.strip()
    assert h.startswith("$7$")
    stack, base, am = console_stack(tmp_path, f"""    users:
      - {{name: admin, password_hash: "{h}"}}
""")
    start(["up", "-c", stack])
    wait_for(lambda: requests.get(f"{base}/-/ready", timeout=2).status_code == 200, timeout=20, what="the console")
    # without a session: pages go to the login page, the API answers 401
    r = requests.get(f"{base}/alerts", allow_redirects=False, timeout=5)
    assert r.status_code == 302 and r.headers["Location"] == "/login?next=/alerts"
    assert requests.get(f"{base}/api/ui/stack", timeout=5).status_code == 401
    assert requests.get(f"{base}/api/alerts/api/v2/status", timeout=5).status_code == 401
    assert requests.get(f"{base}/-/healthy", timeout=5).status_code == 200
    # a wrong password and an unknown user: back to the form, no cookie
    for user, p in (("admin", "nope"), ("root", pw)):
        r = requests.post(f"{base}/login", data={"user": user, "password": p, "next": "/alerts"},
                          allow_redirects=False, timeout=10)
        assert r.status_code == 303 and r.headers["Location"].startswith("/login?error=1") and not r.cookies
    # a login form posted from another site is refused (login CSRF)
    r = requests.post(f"{base}/login", data={"user": "admin", "password": pw}, headers={"Origin": "http://evil.example"},
                      allow_redirects=False, timeout=10)
    assert r.status_code == 403 and "Set-Cookie" not in r.headers
    # an open redirect is not possible through next
    s = requests.Session()
    r = s.post(f"{base}/login", data={"user": "admin", "password": pw, "next": "//evil.example/"},
               allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["Location"] == "/"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert s.get(f"{base}/api/ui/stack", timeout=5).json()["user"] == "admin"
    # the browser: login page, refusal, login, CSRF, logout
    os.makedirs(SHOTS, exist_ok=True)
    out = browser("auth", base, SHOTS, "admin", pw)
    assert out["redirected"] == "/login?next=/alerts"
    assert out["afterWrong"] == "/login" and out["errorShown"] is True
    assert out["afterLogin"] == "/alerts" and out["user"] == "admin"
    assert {"name": "cairn_session", "httpOnly": True, "sameSite": "Strict"} in out["cookie"]
    assert out["cookieVisibleToScript"] is False
    assert out["csrf"] == {"without": 403, "wrong": 403, "with": 200}
    assert out["afterLogout"] == "/login" and out["apiAfterLogout"] == 401
    assert not out["errors"]
