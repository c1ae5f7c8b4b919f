"""Recording and alerting rules, side by side with Debian's Prometheus: the same
prometheus.yml and rule file, the same scrape target (a cairn demo-app), an
Alertmanager API v2 sink per server. The recorded series, the alert's pending ->
firing -> resolved timing and the notifications must match; alert state survives a
restart; promtool and cairn accept and refuse the same rule files."""
import http.server
import json
import shutil
import signal
import subprocess
import threading
import time

import pytest
import requests

from conftest import free_port, run_cairn, wait_for, write_stack

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"

RULES = """groups:
  - name: availability
    interval: 1s
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
        labels: {team: infra}
      - alert: AppUp
        expr: up{job="app"} == 1
        for: 3s
        labels: {severity: page}
        annotations:
          summary: "{{ $labels.instance }} of {{ $labels.job }} is up, value {{ $value }}"
          detail: "{{ 0.25 | humanizePercentage }} {{ humanize 1234567 }} {{ 90 | humanizeDuration }}"
          logic: >-
            {{ if gt $value 0.5 }}high{{ else }}low{{ end }}
            {{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}
            {{ printf "%.2f|%5s|%d" $value "x" 3 }} {{ $labels.instance | stripPort }}
            {{ reReplaceAll "(.*):(.*)" "$2" $labels.instance }} {{ title "ab cd" }}
            {{ with $labels.nothing }}{{ . }}{{ else }}none{{ end }} {{ len $labels }}
            {{ if match "^app" $labels.job }}matched{{ end }} {{ toUpper $labels.job }}
          queried: >-
            {{ with query "sum(up{job='app'})" }}{{ . | first | value }}{{ end }}
            {{ range query "up{job='app'}" }}{{ .Labels.job }}={{ .Value }}{{ end }}
            {{ graphLink "rate(x[5m])" }} {{ tableLink "up" }} {{ parseDuration "1m30s" }}
            {{ with query "up{job='app'}" }}{{ . | first | label "job" }}{{ end }}
"""


class Sink:
    """An Alertmanager API v2 endpoint that keeps what it receives."""

    def __init__(self):
        self.got = []
        sink = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sink.got.append((self.path, json.loads(body), time.time()))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = http.server.HTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def alerts(self):
        return [a for _, body, _ in self.got for a in body]

    def close(self):
        self.srv.shutdown()


def prom_yml(app_port, sink_port):
    return f"""global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}
rule_files: [rules.yml]
alerting:
  alertmanagers: [{{static_configs: [{{targets: ["127.0.0.1:{sink_port}"]}}]}}]
  alert_relabel_configs:
    - {{source_labels: [alertname, severity], separator: "/", regex: "AppUp/(.*)", target_label: relabeled,
        replacement: "sev-$1"}}
    - {{source_labels: [alertname], regex: "Never.*", action: drop}}
scrape_configs:
  - job_name: app
    static_configs: [{{targets: ["127.0.0.1:{app_port}"]}}]
"""


@pytest.fixture
def setup(tmp_path, start):
    app_port = free_port()
    app_stack = write_stack(tmp_path, f"""
services:
  app: {{role: demo-app, listen: ["127.0.0.1:{app_port}"]}}
""", name="app.yaml")
    app = start(["run", "app", "-c", app_stack], name="app")
    wait_for(lambda: requests.get(f"http://127.0.0.1:{app_port}/healthz", timeout=1).ok, what="app")
    sinks = {"cairn": Sink(), "prometheus": Sink()}
    procs = {}
    urls = {}
    for who in ("cairn", "prometheus"):
        d = tmp_path / who
        d.mkdir()
        (d / "rules.yml").write_text(RULES)
        (d / "prometheus.yml").write_text(prom_yml(app_port, sinks[who].port))
        port = free_port()
        urls[who] = f"http://127.0.0.1:{port}"
        if who == "prometheus":
            procs[who] = subprocess.Popen(
                [PROMETHEUS, f"--config.file={d}/prometheus.yml", f"--storage.tsdb.path={d}/data",
                 f"--web.listen-address=127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL, stderr=open(d / "log", "wb"))
        else:
            stack = write_stack(d, f"""
data_dir: data
services:
  metrics:
    role: metrics
    listen: ["127.0.0.1:{port}"]
    prometheus: prometheus.yml
""")
            procs[who] = start(["run", "metrics", "-c", stack], name="metrics")
    for who in urls:
        wait_for(lambda: requests.get(urls[who] + "/-/ready", timeout=1).ok, timeout=20, what=who)
    yield {"app": app, "urls": urls, "sinks": sinks, "procs": procs, "tmp": tmp_path}
    procs["prometheus"].terminate()
    procs["prometheus"].wait(20)
    for s in sinks.values():
        s.close()


def alert_states(url):
    r = requests.get(url + "/api/v1/alerts", timeout=5).json()
    return {a["labels"]["alertname"]: a for a in r["data"]["alerts"]}


def test_rules_like_prometheus(setup):
    urls, sinks = setup["urls"], setup["sinks"]
    seen = {w: {} for w in urls}     # state -> first time seen
    deadline = time.time() + 30
    while time.time() < deadline and not all("firing" in seen[w] for w in urls):
        for w in urls:
            a = alert_states(urls[w]).get("AppUp")
            if a and a["state"] not in seen[w]:
                seen[w][a["state"]] = time.time()
        time.sleep(0.1)
    for w in urls:
        assert "pending" in seen[w] and "firing" in seen[w], (w, seen[w])
        took = seen[w]["firing"] - seen[w]["pending"]
        assert 2.0 <= took <= 6.0, (w, took)

    # the recorded series, with the rule's label
    for w in urls:
        r = requests.get(urls[w] + "/api/v1/query", params={"query": "job:up:sum"}).json()
        assert [(s["metric"], s["value"][1]) for s in r["data"]["result"]] == \
            [({"__name__": "job:up:sum", "job": "app", "team": "infra"}, "1")], (w, r)
        r = requests.get(urls[w] + "/api/v1/query", params={"query": "ALERTS"}).json()
        assert r["data"]["result"][0]["metric"]["alertstate"] == "firing", (w, r)
        r = requests.get(urls[w] + "/api/v1/query", params={"query": "ALERTS_FOR_STATE"}).json()
        assert len(r["data"]["result"]) == 1, (w, r)

    # both sent the same alert, labels and annotations rendered the same way
    wait_for(lambda: all(sinks[w].alerts() for w in urls), timeout=10, what="notifications")
    got = {}
    for w in urls:
        path, body, _ = sinks[w].got[0]
        assert path == "/api/v2/alerts"
        a = body[0]
        assert set(a) >= {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}, a
        got[w] = (a["labels"], a["annotations"])
    assert got["cairn"] == got["prometheus"], got
    assert got["cairn"][0]["relabeled"] == "sev-page"     # alert_relabel_configs

    # /api/v1/rules has Prometheus's shape
    shapes = {}
    for w in urls:
        g = requests.get(urls[w] + "/api/v1/rules").json()["data"]["groups"][0]
        shapes[w] = (sorted(g), [sorted(r) for r in g["rules"]], sorted(g["rules"][1]["alerts"][0]),
                     g["rules"][1]["state"], g["rules"][0]["health"], g["rules"][1]["alerts"][0]["value"])
    assert shapes["cairn"] == shapes["prometheus"], shapes

    # the target goes away: the alert resolves and the resolution is sent
    setup["app"].signal(signal.SIGTERM)
    setup["app"].wait(10)
    for w in urls:
        wait_for(lambda: "AppUp" not in alert_states(urls[w]), timeout=15, what=f"{w} resolves")

    def resolved(w):
        ends = [a for a in sinks[w].alerts()
                if a["endsAt"] and a["endsAt"] < time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 1))]
        return ends
    for w in urls:
        wait_for(lambda: resolved(w), timeout=15, what=f"{w} sends the resolution")


def test_alert_state_survives_restart(setup, start):
    urls = setup["urls"]
    url = urls["cairn"]
    wait_for(lambda: alert_states(url).get("AppUp", {}).get("state") == "firing", timeout=20,
             what="firing")
    active_at = alert_states(url)["AppUp"]["activeAt"]
    p = setup["procs"]["cairn"]
    p.signal(signal.SIGTERM)
    p.wait(10)
    d = setup["tmp"] / "cairn"
    p2 = start(["run", "metrics", "-c", str(d / "stack.yaml")], name="metrics2")
    wait_for(lambda: requests.get(url + "/-/ready", timeout=1).ok, what="restarted")
    # firing again at the first evaluations, with the time it became active before
    a = wait_for(lambda: alert_states(url).get("AppUp"), timeout=10, what="alert restored")
    assert a["activeAt"] == active_at, (a, active_at)
    assert a["state"] == "firing", a
    assert p2.p.poll() is None


BAD_RULES = {
    "bad expression": "groups:\n- name: a\n  rules:\n  - record: x\n    expr: sum(\n",
    "bad record name": "groups:\n- name: a\n  rules:\n  - record: 'bad-name'\n    expr: up\n",
    "both record and alert": "groups:\n- name: a\n  rules:\n  - record: x\n    alert: y\n    expr: up\n",
    "for on a recording rule": "groups:\n- name: a\n  rules:\n  - record: x\n    expr: up\n    for: 5m\n",
    "duplicate group": "groups:\n- name: a\n  rules: []\n- name: a\n  rules: []\n",
    "unknown key": "groups:\n- name: a\n  rules:\n  - record: x\n    expr: up\n    bogus: 1\n",
    "missing expr": "groups:\n- name: a\n  rules:\n  - alert: x\n",
    "bad label name": "groups:\n- name: a\n  rules:\n  - alert: x\n    expr: up\n    labels: {'bad-label': v}\n",
    "unclosed if": "groups:\n- name: a\n  rules:\n  - alert: x\n    expr: up\n    annotations: {s: '{{ if $value }}x'}\n",
    "unknown function": "groups:\n- name: a\n  rules:\n  - alert: x\n    expr: up\n    annotations: {s: '{{ nofunc 1 }}'}\n",
}
GOOD_RULES = {
    "empty": "groups: []\n",
    "full": RULES,
    "limit and interval": "groups:\n- name: a\n  interval: 30s\n  limit: 10\n  rules:\n  - alert: x\n    expr: up == 0\n    for: 1m\n",
    "keep_firing_for": "groups:\n- name: a\n  rules:\n  - alert: x\n    expr: up == 0\n    keep_firing_for: 5m\n",
    "query in a template": "groups:\n- name: a\n  rules:\n  - alert: x\n    expr: up == 0\n    annotations:\n"
                           "      s: '{{ with query \"up\" }}{{ . | first | value | humanize }}{{ end }}'\n",
    "templates": "groups:\n- name: a\n  rules:\n  - alert: x\n    expr: up == 0\n    annotations:\n"
                 "      s: '{{ range $k, $v := $labels }}{{ $k }}{{ end }}{{ with $value }}{{ . | humanize }}{{ end }}'\n",
}


@pytest.mark.parametrize("name,text,ok", [(k, v, False) for k, v in BAD_RULES.items()] +
                         [(k, v, True) for k, v in GOOD_RULES.items()])
def test_promtool_and_cairn_agree(tmp_path, name, text, ok):
    (tmp_path / "rules.yml").write_text(text)
    pt = subprocess.run([PROMTOOL, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True,
                        text=True, timeout=30)
    (tmp_path / "prometheus.yml").write_text("rule_files: [rules.yml]\nscrape_configs: []\n")
    stack = write_stack(tmp_path, """
services:
  metrics:
    role: metrics
    listen: ["127.0.0.1:19999"]
    prometheus: prometheus.yml
""")
    c = run_cairn(["check", "-c", stack])
    assert (pt.returncode == 0) == ok, (name, pt.stdout, pt.stderr)
    assert (c.returncode == 0) == ok, (name, c.stdout, c.stderr)
    if not ok:
        assert "rules.yml:" in c.stderr, c.stderr


def test_alerts_reach_a_webhook_through_alertmanager(tmp_path, start):
    """cairn -> Debian's Alertmanager 0.25 -> a webhook receiver."""
    hook = Sink()
    am_port, am_cluster, app_port, port = free_port(), free_port(), free_port(), free_port()
    (tmp_path / "am.yml").write_text(f"""route:
  receiver: hook
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs: [{{url: "http://127.0.0.1:{hook.port}/hook", send_resolved: true}}]
""")
    am = subprocess.Popen([ALERTMANAGER, f"--config.file={tmp_path}/am.yml", f"--storage.path={tmp_path}/am",
                           f"--web.listen-address=127.0.0.1:{am_port}",
                           f"--cluster.listen-address=127.0.0.1:{am_cluster}"],
                          stdout=subprocess.DEVNULL, stderr=open(tmp_path / "am.log", "wb"))
    try:
        wait_for(lambda: requests.get(f"http://127.0.0.1:{am_port}/-/ready", timeout=1).ok, timeout=20,
                 what="alertmanager")
        app_stack = write_stack(tmp_path, f"""
services:
  app: {{role: demo-app, listen: ["127.0.0.1:{app_port}"]}}
""", name="app.yaml")
        start(["run", "app", "-c", app_stack], name="app")
        (tmp_path / "rules.yml").write_text(RULES)
        (tmp_path / "prometheus.yml").write_text(prom_yml(app_port, am_port))
        stack = write_stack(tmp_path, f"""
data_dir: data
services:
  metrics:
    role: metrics
    listen: ["127.0.0.1:{port}"]
    prometheus: prometheus.yml
""")
        start(["run", "metrics", "-c", stack], name="metrics")
        wait_for(lambda: hook.got, timeout=30, what="the webhook to be called")
        path, body, _ = hook.got[0]
        assert path == "/hook"
        assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "hook", body
        a = body["alerts"][0]
        assert a["labels"]["alertname"] == "AppUp" and a["labels"]["severity"] == "page", a
        assert a["annotations"]["summary"] == f"127.0.0.1:{app_port} of app is up, value 1", a
        assert a["generatorURL"].startswith(f"http://127.0.0.1:{port}/graph?g0.expr="), a
    finally:
        am.terminate()
        am.wait(20)
        hook.close()
