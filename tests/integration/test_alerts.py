"""role: alerts - an Alertmanager-compatible router, checked against real clients:
Debian's Prometheus (sends alerts), amtool (silences), Debian's Alertmanager 0.25 (the
same config and the same alerts must give the same notifications), a webhook sink, a
Slack-style sink and an SMTP sink in this process."""
import base64
import datetime
import http.server
import json
import os
import shutil
import signal
import socketserver
import ssl
import subprocess
import threading
import time

import pytest
import requests

from conftest import free_port, wait_for, write_stack

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"


class Sink:
    """An HTTP endpoint that keeps every JSON body POSTed to it, with its arrival time."""

    def __init__(self, status=200, tls=None):
        self.got = []
        self.headers = []
        self.status = status
        sink = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sink.headers.append(dict(self.headers))
                sink.got.append((time.time(), json.loads(body)))
                self.send_response(sink.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls[0], tls[1])
            self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
            self.url = f"https://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def bodies(self):
        return [b for _, b in self.got]

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


class SmtpSink:
    """A minimal SMTP server (RFC 5321) that keeps each message with its envelope."""

    def __init__(self, auth=False, tls=None):
        self.msgs = []
        self.auths = []
        self.tls_used = False
        sink = self

        class H(socketserver.StreamRequestHandler):
            def handle(self):
                w = self.wfile
                rd = self.rfile
                w.write(b"220 sink ESMTP\r\n")
                env = {"from": None, "to": [], "data": None}
                while True:
                    line = rd.readline()
                    if not line:
                        return
                    cmd = line.decode().strip()
                    up = cmd.upper()
                    if up.startswith("EHLO"):
                        w.write(b"250-sink\r\n" + (b"250-AUTH PLAIN LOGIN\r\n" if auth else b"") +
                                (b"250-STARTTLS\r\n" if tls and not sink.tls_used else b"") +
                                b"250 8BITMIME\r\n")
                    elif up == "STARTTLS" and tls:
                        w.write(b"220 go ahead\r\n")
                        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                        ctx.load_cert_chain(tls[0], tls[1])
                        conn = ctx.wrap_socket(self.connection, server_side=True)
                        rd = conn.makefile("rb")
                        w = conn.makefile("wb", buffering=0)
                        sink.tls_used = True
                    elif up.startswith("AUTH PLAIN"):
                        sink.auths.append(base64.b64decode(cmd.split()[2]).split(b"\0"))
                        w.write(b"235 ok\r\n")
                    elif up.startswith("MAIL FROM:"):
                        env["from"] = cmd[10:].strip()
                        w.write(b"250 ok\r\n")
                    elif up.startswith("RCPT TO:"):
                        env["to"].append(cmd[8:].strip())
                        w.write(b"250 ok\r\n")
                    elif up == "DATA":
                        w.write(b"354 go\r\n")
                        data = []
                        while True:
                            ln = rd.readline()
                            if ln in (b".\r\n", b""):
                                break
                            data.append(ln[1:] if ln.startswith(b"..") else ln)
                        env["data"] = b"".join(data).decode()
                        sink.msgs.append(dict(env))
                        env = {"from": None, "to": [], "data": None}
                        w.write(b"250 queued\r\n")
                    elif up == "QUIT":
                        w.write(b"221 bye\r\n")
                        return
                    else:
                        w.write(b"502 unknown\r\n")

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def start_alerts(start, tmp_path, am_yml, port=None, name="alerts", extra=""):
    port = port or free_port()
    (tmp_path / "alertmanager.yml").write_text(am_yml)
    stack = write_stack(tmp_path, f"""
data_dir: data
services:
  alerts:
    role: alerts
    listen: ["127.0.0.1:{port}"]
    alertmanager: alertmanager.yml
{extra}""")
    p = start(["run", "alerts", "-c", stack], name=name)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: p.p.poll() is not None or requests.get(url + "/-/ready", timeout=1).ok,
             timeout=10, what="alerts ready")
    assert p.p.poll() is None, p.stderr()
    return p, url, stack


def start_alertmanager(tmp_path, yml, external_url=None):
    """Debian's Alertmanager with yml as its configuration (real.yml); the process
    and its URL once ready."""
    aport = free_port()
    (tmp_path / "real.yml").write_text(yml)
    args = [ALERTMANAGER, f"--config.file={tmp_path}/real.yml", f"--storage.path={tmp_path}/am",
            f"--web.listen-address=127.0.0.1:{aport}", "--cluster.listen-address="]
    if external_url:
        args.append(f"--web.external-url={external_url}")
    am = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "am.log", "wb"))
    aurl = f"http://127.0.0.1:{aport}"
    try:
        wait_for(lambda: requests.get(aurl + "/-/ready", timeout=1).ok, timeout=20, what="alertmanager")
    except AssertionError:
        am.terminate()
        am.wait(20)
        raise
    return am, aurl


def post(url, alerts):
    r = requests.post(url + "/api/v2/alerts", json=alerts, timeout=10)
    return r


def metric(url, name):
    text = requests.get(url + "/metrics", timeout=5).text
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


HOOK_YML = """route:
  receiver: hook
  group_by: [alertname]
  group_wait: {gw}
  group_interval: {gi}
  repeat_interval: {ri}
receivers:
  - name: hook
    webhook_configs: [{{url: "{url}", send_resolved: true}}]
"""


def test_api_shapes_and_bad_input(start, tmp_path):
    hook = Sink()
    try:
        _, url, _ = start_alerts(start, tmp_path, HOOK_YML.format(gw="1h", gi="1h", ri="1h", url=hook.url))
        assert post(url, [{"labels": {"alertname": "A", "job": "j", "instance": "i1"},
                           "annotations": {"summary": "s"}, "generatorURL": "http://x/graph"},
                          {"labels": {"alertname": "A", "job": "j", "instance": "i2"}}]).status_code == 200
        alerts = requests.get(url + "/api/v2/alerts", timeout=5).json()
        assert len(alerts) == 2
        a = alerts[0]
        for k in ("annotations", "endsAt", "fingerprint", "receivers", "startsAt", "status", "updatedAt",
                  "labels"):
            assert k in a, a
        assert a["status"] == {"inhibitedBy": [], "silencedBy": [], "state": "active"}
        assert a["receivers"] == [{"name": "hook"}]
        assert sorted(x["fingerprint"] for x in alerts) == [x["fingerprint"] for x in alerts]
        groups = requests.get(url + "/api/v2/alerts/groups", timeout=5).json()
        assert len(groups) == 1 and groups[0]["labels"] == {"alertname": "A"}
        assert groups[0]["receiver"] == {"name": "hook"} and len(groups[0]["alerts"]) == 2
        only = requests.get(url + "/api/v2/alerts", params={"filter": 'instance="i2"'}, timeout=5).json()
        assert [x["labels"]["instance"] for x in only] == ["i2"]
        assert requests.get(url + "/api/v2/alerts", params={"receiver": "nope"}, timeout=5).json() == []
        st = requests.get(url + "/api/v2/status", timeout=5).json()
        assert st["cluster"]["status"] == "disabled" and "receiver: hook" in st["config"]["original"]
        assert requests.get(url + "/api/v2/receivers", timeout=5).json() == [{"name": "hook"}]
        # malformed alerts: a 400 that names the field; the valid ones of a batch are kept
        r = post(url, [{"annotations": {"x": "y"}}])
        assert r.status_code == 400 and "labels" in r.json(), r.text
        r = post(url, [{"labels": {"alertname": "B"}, "startsAt": "yesterday"}])
        assert r.status_code == 400 and "startsAt" in r.json(), r.text
        r = post(url, [{"labels": {"0bad": "x"}}, {"labels": {"alertname": "Kept"}}])
        assert r.status_code == 400 and "0bad" in r.json(), r.text
        assert any(x["labels"].get("alertname") == "Kept"
                   for x in requests.get(url + "/api/v2/alerts", timeout=5).json())
        r = post(url, [{"labels": {"alertname": "C"}, "startsAt": iso(time.time()),
                        "endsAt": iso(time.time() - 60)}])
        assert r.status_code == 400 and "start time must be before end time" in r.json()
        r = requests.post(url + "/api/v2/alerts", data=b"{not json", timeout=5)
        assert r.status_code == 400 and "line 1" in r.json()
        r = requests.post(url + "/api/v2/silences", json={"matchers": [], "startsAt": iso(time.time()),
                                                         "endsAt": iso(time.time() + 60),
                                                         "createdBy": "t", "comment": "c"}, timeout=5)
        assert r.status_code == 400 and "matchers" in r.json()
        r = requests.post(url + "/api/v2/silences", json={"matchers": [{"name": "a", "value": "b",
                                                                        "isRegex": False}],
                                                         "startsAt": iso(time.time()), "endsAt": iso(time.time() + 60),
                                                         "createdBy": "t"}, timeout=5)
        assert r.status_code == 400 and "comment in body is required" in r.json()
        assert requests.get(url + "/api/v2/silence/nope", timeout=5).status_code == 404
        assert metric(url, "alertmanager_alerts_invalid_total") >= 4
        assert metric(url, 'alertmanager_alerts_received_total') >= 3
        assert hook.got == []       # group_wait is an hour
    finally:
        hook.close()


def test_grouping_timers_with_prometheus(start, tmp_path):
    """Debian's Prometheus fires a rule at cairn: first notification after group_wait, a change
    after group_interval, a repeat after repeat_interval, then the resolved message."""
    hook = Sink()
    flag = {"v": 1}

    class Exp(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"flag {flag['v']}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    exp = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Exp)
    threading.Thread(target=exp.serve_forever, daemon=True).start()
    prom = None
    try:
        am_port = free_port()
        _, url, _ = start_alerts(start, tmp_path, HOOK_YML.format(gw="2s", gi="3s", ri="7s", url=hook.url),
                                 port=am_port)
        (tmp_path / "rules.yml").write_text("""groups:
  - name: g
    rules:
      - alert: FlagUp
        expr: flag == 1
        labels: {severity: page}
        annotations: {summary: "flag is {{ $value }}"}
""")
        pport = free_port()
        (tmp_path / "prometheus.yml").write_text(f"""global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [rules.yml]
alerting:
  alertmanagers: [{{static_configs: [{{targets: ["127.0.0.1:{am_port}"]}}]}}]
scrape_configs:
  - job_name: exp
    static_configs: [{{targets: ["127.0.0.1:{exp.server_address[1]}"]}}]
""")
        prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path}/prometheus.yml",
                                 f"--storage.tsdb.path={tmp_path}/prom", f"--web.listen-address=127.0.0.1:{pport}"],
                                stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prom.log", "wb"))
        seen = wait_for(lambda: requests.get(url + "/api/v2/alerts", timeout=2).json() and time.time(),
                        timeout=40, interval=0.05, what="the alert from Prometheus")
        wait_for(lambda: hook.got, timeout=10, what="first notification")
        t1, b1 = hook.got[0]
        assert 1.5 <= t1 - seen <= 4.0, t1 - seen          # group_wait 2s
        assert b1["status"] == "firing" and b1["groupLabels"] == {"alertname": "FlagUp"}
        assert b1["alerts"][0]["annotations"]["summary"] == "flag is 1"
        assert b1["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
        assert b1["alerts"][0]["generatorURL"].startswith(f"http://")
        # a new alert in the group is notified at the next group_interval tick, not after repeat
        post(url, [{"labels": {"alertname": "FlagUp", "severity": "page", "extra": "1"}}])
        wait_for(lambda: len(hook.got) >= 2, timeout=10, what="second notification")
        t2, b2 = hook.got[1]
        assert len(b2["alerts"]) == 2 and t2 - t1 <= 4.5, (t2 - t1, b2)
        # nothing changes: the next one is a repeat, 7s after the last
        wait_for(lambda: len(hook.got) >= 3, timeout=15, what="repeat")
        t3, b3 = hook.got[2]
        assert 6.5 <= t3 - t2 <= 10.5, t3 - t2
        assert len(b3["alerts"]) == 2
        # resolve the rule's alert (the extra one resolves too)
        post(url, [{"labels": {"alertname": "FlagUp", "severity": "page", "extra": "1"},
                    "endsAt": iso(time.time())}])
        flag["v"] = 0
        wait_for(lambda: any(b["status"] == "resolved" for _, b in hook.got), timeout=30,
                 what="resolved notification")
        res = [b for _, b in hook.got if b["status"] == "resolved"][0]
        assert all(a["status"] == "resolved" and a["endsAt"] != "0001-01-01T00:00:00Z" for a in res["alerts"])
    finally:
        if prom:
            prom.terminate()
            prom.wait(20)
        exp.shutdown()
        exp.server_close()
        hook.close()


def amtool(url, *args):
    r = subprocess.run([AMTOOL, f"--alertmanager.url={url}", *args], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_amtool_silences(start, tmp_path):
    hook = Sink()
    try:
        p, url, stack = start_alerts(start, tmp_path, HOOK_YML.format(gw="500ms", gi="1s", ri="1h", url=hook.url))
        sid = amtool(url, "silence", "add", "alertname=Quiet", "-c", "maintenance", "-d", "1h").strip()
        assert len(sid) == 36
        assert sid in amtool(url, "silence", "query", "-q")
        sil = requests.get(f"{url}/api/v2/silence/{sid}", timeout=5).json()
        assert sil["status"]["state"] == "active" and sil["comment"] == "maintenance"
        post(url, [{"labels": {"alertname": "Quiet"}}, {"labels": {"alertname": "Loud"}}])
        wait_for(lambda: hook.got, timeout=10, what="the unsilenced alert")
        base = metric(url, "cairn_alerts_group_flushes_total")
        wait_for(lambda: metric(url, "cairn_alerts_group_flushes_total") >= base + 4, timeout=10,
                 what="more flushes")
        assert [b["groupLabels"]["alertname"] for b in hook.bodies()] == ["Loud"]
        q = amtool(url, "alert", "query")
        assert "Loud" in q and "Quiet" not in q
        assert "Quiet" in amtool(url, "alert", "query", "--silenced")
        st = requests.get(url + "/api/v2/alerts", params={"filter": 'alertname="Quiet"'}, timeout=5).json()
        assert st[0]["status"]["state"] == "suppressed" and st[0]["status"]["silencedBy"] == [sid]
        # the silence survives a restart (persisted), then amtool expires it
        p.signal(signal.SIGTERM)
        p.wait(10)
        p2 = start(["run", "alerts", "-c", stack], name="alerts2")
        wait_for(lambda: requests.get(url + "/-/ready", timeout=1).ok, what="restarted")
        assert sid in amtool(url, "silence", "query", "-q")
        amtool(url, "silence", "expire", sid)
        assert sid not in amtool(url, "silence", "query", "-q")
        assert sid in amtool(url, "silence", "query", "--expired", "-q")
        post(url, [{"labels": {"alertname": "Quiet"}}])
        wait_for(lambda: any(b["groupLabels"]["alertname"] == "Quiet" for b in hook.bodies()), timeout=10,
                 what="the alert once unsilenced")
        assert p2.p.poll() is None
    finally:
        hook.close()


DIFF_YML = """route:
  receiver: hook
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
  routes:
    - matchers: ['team="db"']
      receiver: db
      group_by: [alertname, instance]
      continue: true
    - match_re: {{severity: "crit.*"}}
      receiver: hook
inhibit_rules:
  - source_matchers: [severity="critical"]
    target_matchers: [severity="warning"]
    equal: [alertname]
receivers:
  - name: hook
    webhook_configs: [{{url: "{hook}", send_resolved: true}}]
  - name: db
    webhook_configs: [{{url: "{db}", send_resolved: true, max_alerts: 1}}]
"""


def summary(sinks, t0):
    out = []
    for s in sinks:
        for t, b in s.got:
            out.append((round(t - t0), b["receiver"], b["groupKey"], b["status"], b["truncatedAlerts"],
                        json.dumps(b["groupLabels"], sort_keys=True), json.dumps(b["commonLabels"], sort_keys=True),
                        tuple((a["fingerprint"], a["status"]) for a in b["alerts"])))
    return sorted(out, key=lambda x: x[1:] + (x[0],))


def test_same_notifications_as_alertmanager(start, tmp_path):
    sinks = {k: Sink() for k in ("c_hook", "c_db", "a_hook", "a_db")}
    am = None
    try:
        _, curl, _ = start_alerts(start, tmp_path, DIFF_YML.format(hook=sinks["c_hook"].url, db=sinks["c_db"].url))
        am, aurl = start_alertmanager(tmp_path, DIFF_YML.format(hook=sinks["a_hook"].url, db=sinks["a_db"].url))
        now = time.time()
        batch = [
            {"labels": {"alertname": "Disk", "instance": "a", "severity": "warning", "job": "node"}},
            {"labels": {"alertname": "Disk", "instance": "b", "severity": "critical", "job": "node"}},
            {"labels": {"alertname": "Lag", "instance": "db1", "team": "db", "severity": "warning"},
             "annotations": {"runbook": "r"}},
            {"labels": {"alertname": "Lag", "instance": "db2", "team": "db"}},
            {"labels": {"alertname": "Old", "job": "x"}, "startsAt": iso(now - 3600)},
        ]
        t0 = time.time()
        for u in (curl, aurl):
            assert post(u, batch).status_code == 200
        wait_for(lambda: len(summary([sinks["a_hook"], sinks["a_db"]], t0)) >= 4, timeout=15, what="AM notified")
        wait_for(lambda: len(summary([sinks["c_hook"], sinks["c_db"]], t0)) >= 4, timeout=15, what="cairn notified")
        # resolve one; both must send the same resolved notification
        t1 = time.time()
        res = [{"labels": {"alertname": "Old", "job": "x"}, "startsAt": iso(now - 3600), "endsAt": iso(t1)}]
        for u in (curl, aurl):
            assert post(u, res).status_code == 200
        wait_for(lambda: len(summary([sinks["a_hook"], sinks["a_db"]], t0)) >= 5, timeout=15, what="AM resolved")
        wait_for(lambda: len(summary([sinks["c_hook"], sinks["c_db"]], t0)) >= 5, timeout=15, what="cairn resolved")
        a = summary([sinks["a_hook"], sinks["a_db"]], t0)
        c = summary([sinks["c_hook"], sinks["c_db"]], t0)
        assert [x[1:] for x in c] == [x[1:] for x in a], (c, a)
        for x, y in zip(c, a):
            assert abs(x[0] - y[0]) <= 1, (x, y)          # same moments, within a second
        # the same fingerprints, groups and states through the API
        ca = {x["fingerprint"]: x["status"]["state"] for x in requests.get(curl + "/api/v2/alerts", timeout=5).json()}
        aa = {x["fingerprint"]: x["status"]["state"] for x in requests.get(aurl + "/api/v2/alerts", timeout=5).json()}
        assert ca == aa
        cg = [(g["labels"], g["receiver"]["name"], len(g["alerts"]))
              for g in requests.get(curl + "/api/v2/alerts/groups", timeout=5).json()]
        ag = [(g["labels"], g["receiver"]["name"], len(g["alerts"]))
              for g in requests.get(aurl + "/api/v2/alerts/groups", timeout=5).json()]
        assert sorted(map(json.dumps, cg)) == sorted(map(json.dumps, ag))
    finally:
        if am:
            am.terminate()
            am.wait(20)
        for s in sinks.values():
            s.close()


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_restart_sends_no_duplicate(start, tmp_path, how):
    hook = Sink()
    try:
        p, url, stack = start_alerts(start, tmp_path, HOOK_YML.format(gw="500ms", gi="1s", ri="1h", url=hook.url))
        alert = [{"labels": {"alertname": "Persist", "job": "j"}, "startsAt": iso(time.time()),
                  "endsAt": iso(time.time() + 3600)}]
        post(url, alert)
        wait_for(lambda: hook.got, timeout=10, what="first notification")
        # the notification is logged (and on disk) once the receiver has answered
        wait_for(lambda: metric(url, "alertmanager_nflog_entries") == 1, what="the log entry")
        p.signal(getattr(signal, how))
        p.wait(10)
        p2 = start(["run", "alerts", "-c", stack], name="alerts2")
        wait_for(lambda: requests.get(url + "/-/ready", timeout=1).ok, what="restarted")
        post(url, alert)       # as Prometheus re-sends its firing alerts
        wait_for(lambda: (metric(url, "cairn_alerts_group_flushes_total") or 0) >= 3, timeout=10,
                 what="flushes after the restart")
        assert len(hook.got) == 1, hook.bodies()
        # a change is still notified
        post(url, [{"labels": {"alertname": "Persist", "job": "j2"}}])
        wait_for(lambda: len(hook.got) == 2, timeout=10, what="the change")
        assert p2.p.poll() is None
    finally:
        hook.close()


def test_email_slack_and_unreachable_receivers(start, tmp_path):
    smtp = SmtpSink(auth=True)
    slack = Sink()
    hook = Sink()
    dead = free_port()
    try:
        yml = f"""global:
  smtp_smarthost: 127.0.0.1:{smtp.port}
  smtp_from: "cairn <alerts@cairn.test>"
  smtp_require_tls: false
  smtp_auth_username: bob
  smtp_auth_password: secret
  slack_api_url: http://127.0.0.1:{slack.port}/services/T/B/X
route:
  receiver: mail
  group_by: [alertname]
  group_wait: 500ms
  group_interval: 1s
  routes:
    - matchers: [channel="slack"]
      receiver: chat
    - matchers: [channel="dead"]
      receiver: dead
    - matchers: [channel="hook"]
      receiver: hook
receivers:
  - name: mail
    email_configs: [{{to: "ops@cairn.test, Dev <dev@cairn.test>", headers: {{X-Team: core}}}}]
  - name: chat
    slack_configs: [{{channel: "#alerts"}}]
  - name: dead
    webhook_configs: [{{url: "http://127.0.0.1:{dead}/x"}}]
  - name: hook
    webhook_configs: [{{url: "{hook.url}"}}]
"""
        _, url, _ = start_alerts(start, tmp_path, yml)
        original = requests.get(url + "/api/v2/status", timeout=5).json()["config"]["original"]
        assert "secret" not in original.replace("<secret>", "") and "services/T/B/X" not in original
        assert "smtp_auth_password: <secret>" in original and "smtp_auth_username: bob" in original
        post(url, [{"labels": {"alertname": "DiskFull", "instance": "a", "channel": "mail"},
                    "annotations": {"summary": "disk <full>"}},
                   {"labels": {"alertname": "CpuHot", "channel": "slack", "instance": "h"}},
                   {"labels": {"alertname": "Gone", "channel": "dead"}},
                   {"labels": {"alertname": "Fine", "channel": "hook"}}])
        wait_for(lambda: smtp.msgs, timeout=15, what="an email")
        m = smtp.msgs[0]
        assert m["from"] == "<alerts@cairn.test>" and m["to"] == ["<ops@cairn.test>", "<dev@cairn.test>"]
        assert smtp.auths and smtp.auths[0][1:] == [b"bob", b"secret"]
        d = m["data"]
        assert "Subject: [FIRING:1] DiskFull (mail a)" in d, d
        assert "X-Team: core" in d and "To: ops@cairn.test, Dev <dev@cairn.test>" in d
        assert "text/html" in d and "disk &lt;full&gt;" in d.replace("=\r\n", "")
        wait_for(lambda: slack.got, timeout=10, what="a slack message")
        s = slack.got[0][1]
        att = s["attachments"][0]
        assert s["channel"] == "#alerts" and s["username"] == "Alertmanager"
        assert att["title"] == "[FIRING:1] CpuHot (slack h)" and att["color"] == "danger"
        assert att["title_link"] == f"{url}/#/alerts?receiver=chat"
        # the unreachable receiver retries without holding up the others
        wait_for(lambda: hook.got, timeout=10, what="the healthy webhook")
        wait_for(lambda: (metric(url, 'alertmanager_notification_requests_failed_total') or 0) >= 2, timeout=10,
                 what="retries against the dead receiver")
        assert metric(url, 'alertmanager_notifications_total') >= 4
    finally:
        smtp.close()
        slack.close()
        hook.close()


def test_email_over_starttls_with_verification(start, tmp_path):
    """require_tls (the default): STARTTLS, the server certificate checked against ca_file
    (an IP subjectAltName); a server without STARTTLS gets nothing and the failure counts."""
    cert, key = tmp_path / "smtp.pem", tmp_path / "smtp.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=smtp.test", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    good = SmtpSink(auth=True, tls=(str(cert), str(key)))
    plain = SmtpSink()
    try:
        yml = f"""route:
  receiver: tls
  group_wait: 500ms
  group_interval: 1s
  routes: [{{matchers: [to="plain"], receiver: plain}}]
receivers:
  - name: tls
    email_configs: [{{to: ops@cairn.test, from: am@cairn.test, smarthost: "127.0.0.1:{good.port}",
                      auth_username: u, auth_password: p, tls_config: {{ca_file: {cert}}}}}]
  - name: plain
    email_configs: [{{to: ops@cairn.test, from: am@cairn.test, smarthost: "127.0.0.1:{plain.port}"}}]
"""
        _, url, _ = start_alerts(start, tmp_path, yml)
        post(url, [{"labels": {"alertname": "Secure", "to": "tls"}}, {"labels": {"alertname": "Clear", "to": "plain"}}])
        wait_for(lambda: good.msgs, timeout=15, what="an email over TLS")
        assert good.tls_used and good.auths[0][1:] == [b"u", b"p"]
        assert "Subject: [FIRING:1]  (Secure tls)" in good.msgs[0]["data"]   # no group_by: empty group labels
        wait_for(lambda: (metric(url, "alertmanager_notification_requests_failed_total") or 0) >= 1, timeout=15,
                 what="the refused plain-text server")
        assert plain.msgs == []
        err = open(tmp_path / "alerts.err").read()
        assert "does not advertise the STARTTLS extension" in err
    finally:
        good.close()
        plain.close()


def test_alert_storm_is_grouped(start, tmp_path):
    hook = Sink()
    try:
        _, url, _ = start_alerts(start, tmp_path, HOOK_YML.format(gw="1s", gi="1h", ri="1h", url=hook.url))
        n = 20000
        for k in range(0, n, 5000):
            r = post(url, [{"labels": {"alertname": f"Storm{i % 3}", "instance": f"host-{i}", "job": "node"}}
                           for i in range(k, k + 5000)])
            assert r.status_code == 200
        wait_for(lambda: len(hook.got) >= 3, timeout=20, what="three group notifications")
        base = metric(url, "cairn_alerts_group_flushes_total")
        assert base >= 3
        assert len(hook.got) == 3
        assert sum(len(b["alerts"]) for b in hook.bodies()) == n
        assert sorted(b["groupLabels"]["alertname"] for b in hook.bodies()) == ["Storm0", "Storm1", "Storm2"]
    finally:
        hook.close()


GOOD_CONFIGS = [
    HOOK_YML.format(gw="30s", gi="5m", ri="4h", url="http://127.0.0.1:5001/"),
    DIFF_YML.format(hook="http://127.0.0.1:5001/", db="http://127.0.0.1:5002/"),
    """route:
  receiver: r
  group_by: ['...']
  routes:
    - receiver: r
      matchers: ['env=~"prod|stage"', 'team!="x"']
      mute_time_intervals: [offhours]
      active_time_intervals: [always]
time_intervals:
  - name: offhours
    time_intervals:
      - times: [{start_time: "00:00", end_time: "08:00"}]
        weekdays: ["monday:friday"]
        days_of_month: ["1:5", "-1"]
        months: ["january:march"]
        years: ["2020:2030"]
        location: Europe/Berlin
  - name: always
    time_intervals: [{}]
receivers:
  - name: r
""",
    """global:
  pagerduty_url: http://127.0.0.1:5003/v2/enqueue
route:
  receiver: pd
receivers:
  - name: pd
    pagerduty_configs:
      - routing_key: abc
        details: {team: '{{ .CommonLabels.team }}'}
        links: [{href: 'http://runbook/{{ .GroupLabels.alertname }}', text: runbook}]
""",
    """global:
  opsgenie_api_url: http://127.0.0.1:5004/
  opsgenie_api_key: k
route:
  receiver: og
receivers:
  - name: og
    opsgenie_configs:
      - responders: [{name: 'a,b', type: teams}, {username: bob, type: User}]
        tags: 'x,y'
        priority: P3
""",
]

BAD_CONFIGS = [
    ("route:\n  receiver: nope\nreceivers:\n  - name: r\n", "undefined receiver"),
    ("route:\n  receiver: r\n  matchers: [a=b]\nreceivers:\n  - name: r\n", "root route must not have any matchers"),
    ("route:\n  receiver: r\n  group_interval: 0s\nreceivers:\n  - name: r\n", "group_interval cannot be zero"),
    ("route:\n  receiver: r\nreceivers:\n  - name: r\n  - name: r\n", "is not unique"),
    ("route:\n  receiver: r\n  routes: [{matchers: ['a=~\"(\"']}]\nreceivers:\n  - name: r\n", "regexp"),
    ("route:\n  receiver: r\nreceivers:\n  - name: r\n    email_configs: [{to: a@b}]\n", "no global SMTP from set"),
    ("route:\n  receiver: r\nreceivers:\n  - name: r\n    pagerduty_configs: [{severity: error}]\n",
     "missing service or routing key in PagerDuty config"),
    ("route:\n  receiver: r\nreceivers:\n  - name: r\n    opsgenie_configs: [{api_key: k, api_url: 'http://127.0.0.1:1/',"
     " responders: [{type: team}]}]\n", "has to have at least one of id, username or name"),
    ("route:\n  receiver: r\nreceivers:\n  - name: r\n    opsgenie_configs: [{api_key: k, api_url: 'http://127.0.0.1:1/',"
     " responders: [{name: x, type: crew}]}]\n", "does not match valid options"),
    ("route:\n  receiver: r\nreceivers:\n  - name: r\n    opsgenie_configs: [{api_url: 'http://127.0.0.1:1/'}]\n",
     "no global OpsGenie API Key set"),
]


def test_config_agrees_with_amtool_and_reloads(start, tmp_path):
    for i, cfg in enumerate(GOOD_CONFIGS):
        f = tmp_path / f"good{i}.yml"
        f.write_text(cfg)
        r = subprocess.run([AMTOOL, "check-config", str(f)], capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stdout + r.stderr
        stack = write_stack(tmp_path, f"services:\n  a: {{role: alerts, listen: ['127.0.0.1:1'], "
                                      f"alertmanager: good{i}.yml}}\n", name=f"s{i}.yaml")
        c = subprocess.run([os.environ.get("CAIRN_BIN") or os.path.join(os.path.dirname(__file__), "..", "..",
                                                                         "build", "cairn"), "check", "-c", stack],
                           capture_output=True, text=True, timeout=20)
        assert c.returncode == 0, c.stderr
    for i, (cfg, msg) in enumerate(BAD_CONFIGS):
        f = tmp_path / f"bad{i}.yml"
        f.write_text(cfg)
        r = subprocess.run([AMTOOL, "check-config", str(f)], capture_output=True, text=True, timeout=20)
        assert r.returncode != 0, cfg
        stack = write_stack(tmp_path, f"services:\n  a: {{role: alerts, listen: ['127.0.0.1:1'], "
                                      f"alertmanager: bad{i}.yml}}\n", name=f"b{i}.yaml")
        c = subprocess.run([os.environ.get("CAIRN_BIN") or os.path.join(os.path.dirname(__file__), "..", "..",
                                                                         "build", "cairn"), "check", "-c", stack],
                           capture_output=True, text=True, timeout=20)
        assert c.returncode == 2 and msg in c.stderr and f"bad{i}.yml:" in c.stderr, (cfg, c.stderr)
    # reload: a bad file is refused and the old configuration stays; a good one is taken
    hook = Sink()
    try:
        p, url, _ = start_alerts(start, tmp_path, HOOK_YML.format(gw="1s", gi="1s", ri="1h", url=hook.url))
        (tmp_path / "alertmanager.yml").write_text(BAD_CONFIGS[0][0])
        r = requests.post(url + "/-/reload", timeout=5)
        assert r.status_code == 500 and "undefined receiver" in r.text
        assert metric(url, "alertmanager_config_last_reload_successful") == 0
        assert requests.get(url + "/api/v2/receivers", timeout=5).json() == [{"name": "hook"}]
        (tmp_path / "alertmanager.yml").write_text(HOOK_YML.format(gw="1s", gi="1s", ri="1h", url=hook.url)
                                                   .replace("receiver: hook", "receiver: team").replace("name: hook", "name: team"))
        p.signal(signal.SIGHUP)
        wait_for(lambda: requests.get(url + "/api/v2/receivers", timeout=5).json() == [{"name": "team"}],
                 timeout=10, what="reloaded by SIGHUP")
        assert metric(url, "alertmanager_config_last_reload_successful") == 1
    finally:
        hook.close()


TMPL_FILE = """{{ define "my.title" }}[{{ .Status | toUpper }}{{ if eq .Status "firing" }}:{{ .Alerts.Firing | len }}{{ end }}] {{ .CommonLabels.alertname }}{{ end }}
{{ define "my.text" -}}
{{ range $i, $a := .Alerts -}}
{{ $i }}. {{ $a.Labels.instance }} {{ with $a.Annotations.summary }}{{ . }}{{ else }}(no summary){{ end }}
  {{- range $a.Labels.SortedPairs }} {{ .Name }}={{ .Value }}{{ end }}
{{ end -}}
common: {{ .CommonLabels.Remove .GroupLabels.Names | len }} {{ .GroupLabels.SortedPairs.Values | join "," }}
{{ range .Alerts }}{{ .StartsAt }}|{{ .StartsAt.Format "Mon Jan _2 15:04:05.000 MST 2006" }}|{{ .StartsAt.Unix }}|{{ .EndsAt.IsZero }};{{ end }}
{{ if match "^cairn" .Receiver }}matched{{ end }} {{ reReplaceAll "(\\\\d+)" "<$1>" "a1b22" }} {{ title "hello world" }} {{ printf "%.2f|%5s|%d" 3.14159 "x" 42 }}
{{- end }}
"""


def test_templates_render_like_alertmanager(start, tmp_path):
    """Custom Go templates (a templates file and templated Slack fields) give the same
    Slack payloads in cairn and in Debian's Alertmanager."""
    sinks = {"c": Sink(), "a": Sink()}
    am = None
    try:
        (tmp_path / "tmpl").mkdir()
        (tmp_path / "tmpl" / "my.tmpl").write_text(TMPL_FILE)

        def yml(sink):
            return f"""global:
  slack_api_url: {sink.url}
templates: ["tmpl/*.tmpl"]
route:
  receiver: cairn-slack
  group_by: [alertname]
  group_wait: 500ms
  group_interval: 1s
receivers:
  - name: cairn-slack
    slack_configs:
      - channel: "#{{{{ .CommonLabels.team }}}}"
        title: '{{{{ template "my.title" . }}}}'
        text: '{{{{ template "my.text" . }}}}'
        fallback: '{{{{ template "slack.default.fallback" . }}}}'
        color: '{{{{ if eq .Status "firing" }}}}warning{{{{ else }}}}good{{{{ end }}}}'
        callback_id: '{{{{ .GroupLabels.alertname }}}}-cb'
        footer: plain footer
        send_resolved: true
"""
        _, curl, _ = start_alerts(start, tmp_path, yml(sinks["c"]))
        am, aurl = start_alertmanager(tmp_path, yml(sinks["a"]), external_url=curl)
        t0 = iso(time.time() - 0.25)
        batch = [{"labels": {"alertname": "Lag", "instance": "db1", "team": "data", "severity": "page"},
                  "annotations": {"summary": "replica <behind>"}, "startsAt": t0},
                 {"labels": {"alertname": "Lag", "instance": "db2", "team": "data"}, "startsAt": t0}]
        for u in (curl, aurl):
            assert post(u, batch).status_code == 200
        wait_for(lambda: sinks["a"].got and sinks["c"].got, timeout=15, what="both notified")
        c, a = sinks["c"].got[0][1], sinks["a"].got[0][1]
        assert c["channel"] == a["channel"] == "#data"
        for k in ("title", "text", "fallback", "color", "title_link", "callback_id", "footer"):
            assert c["attachments"][0][k] == a["attachments"][0][k], (k, c["attachments"][0][k],
                                                                      a["attachments"][0][k])
        assert "0. db1 replica <behind> alertname=Lag instance=db1" in c["attachments"][0]["text"]
        assert "<1>b<22>" in c["attachments"][0]["text"]
    finally:
        if am:
            am.terminate()
            am.wait(20)
        for s in sinks.values():
            s.close()


def test_template_errors_are_refused(tmp_path):
    cairn = os.environ.get("CAIRN_BIN") or os.path.join(os.path.dirname(__file__), "..", "..", "build", "cairn")
    for bad, msg in [("title: '{{ if .Status }}'", "unexpected EOF"),
                     ("title: '{{ .Status'", "unclosed action")]:
        (tmp_path / "am.yml").write_text(f"""route: {{receiver: r}}
receivers:
  - name: r
    slack_configs: [{{api_url: "http://127.0.0.1:1/x", {bad}}}]
""")
        stack = write_stack(tmp_path, "services:\n  a: {role: alerts, listen: ['127.0.0.1:1'], alertmanager: am.yml}\n")
        c = subprocess.run([cairn, "check", "-c", stack], capture_output=True, text=True, timeout=20)
        # Alertmanager parses templates only when it sends (amtool accepts the file, the
        # notification fails later); cairn refuses them at load, with the position
        r = subprocess.run([AMTOOL, "check-config", str(tmp_path / "am.yml")], capture_output=True, text=True, timeout=20)
        assert r.returncode == 0
        assert c.returncode == 2 and msg in c.stderr and "am.yml:" in c.stderr, c.stderr


def test_cairn_metrics_rules_to_cairn_alerts(start, tmp_path):
    """The whole cairn path: a rule in the metrics role fires, the alerts role groups it
    and a webhook gets Alertmanager's payload with the rendered annotation."""
    hook = Sink()
    try:
        am_port, mport = free_port(), free_port()
        (tmp_path / "alertmanager.yml").write_text(HOOK_YML.format(gw="500ms", gi="1s", ri="1h", url=hook.url))
        (tmp_path / "rules.yml").write_text("""groups:
  - name: g
    interval: 1s
    rules:
      - alert: AlwaysOn
        expr: vector(42)
        labels: {severity: info}
        annotations: {summary: "{{ if gt $value 40.0 }}high {{ $value }}{{ end }}"}
""")
        (tmp_path / "prometheus.yml").write_text(f"""global: {{evaluation_interval: 1s}}
rule_files: [rules.yml]
alerting:
  alertmanagers: [{{static_configs: [{{targets: ["127.0.0.1:{am_port}"]}}]}}]
scrape_configs: []
""")
        stack = write_stack(tmp_path, f"""
data_dir: data
services:
  alerts: {{role: alerts, listen: ["127.0.0.1:{am_port}"], alertmanager: alertmanager.yml}}
  metrics: {{role: metrics, listen: ["127.0.0.1:{mport}"], prometheus: prometheus.yml}}
""")
        up = start(["up", "-c", stack], name="up")
        # both services start at once: when metrics fires before alerts listens, the
        # alert goes again after the resend delay (1 min, as Prometheus's), so the
        # bound covers one resend (seen under ASan on a loaded machine)
        wait_for(lambda: hook.got, timeout=75, what="the webhook")
        b = hook.got[0][1]
        assert b["receiver"] == "hook" and b["groupLabels"] == {"alertname": "AlwaysOn"}
        a = b["alerts"][0]
        assert a["labels"]["severity"] == "info" and a["annotations"]["summary"] == "high 42"
        assert a["generatorURL"].startswith(f"http://127.0.0.1:{mport}/graph")
        assert up.p.poll() is None
    finally:
        hook.close()


def test_http_config_auth_and_tls(start, tmp_path):
    """http_config: basic_auth and a bearer token reach the receivers; an https receiver
    with a self-signed certificate needs insecure_skip_verify."""
    cert, key = tmp_path / "hook.pem", tmp_path / "hook.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=hook.test"], check=True, capture_output=True)
    basic, bearer = Sink(), Sink()
    secure, strict = Sink(tls=(str(cert), str(key))), Sink(tls=(str(cert), str(key)))
    (tmp_path / "token").write_text("s3cr3t\n")
    try:
        yml = f"""global:
  http_config: {{authorization: {{credentials_file: token}}}}
route:
  receiver: all
  group_wait: 500ms
  group_interval: 1s
receivers:
  - name: all
    webhook_configs:
      - url: {basic.url}
        http_config: {{basic_auth: {{username: alice, password: "open sesame"}}}}
      - url: {bearer.url}
      - url: {secure.url}
        http_config: {{tls_config: {{insecure_skip_verify: true}}}}
      - url: {strict.url}
"""
        _, url, _ = start_alerts(start, tmp_path, yml)
        post(url, [{"labels": {"alertname": "Auth"}}])
        wait_for(lambda: basic.got and bearer.got and secure.got, timeout=15, what="three receivers")
        assert basic.headers[0]["Authorization"] == "Basic " + base64.b64encode(b"alice:open sesame").decode()
        assert bearer.headers[0]["Authorization"] == "Bearer s3cr3t"
        assert secure.got[0][1]["status"] == "firing"
        # the self-signed receiver without insecure_skip_verify is refused, and retried
        wait_for(lambda: (metric(url, "alertmanager_notification_requests_failed_total") or 0) >= 1,
                 timeout=10, what="the refused certificate")
        assert strict.got == []
        original = requests.get(url + "/api/v2/status", timeout=5).json()["config"]["original"]
        assert "open sesame" not in original
    finally:
        for k in (basic, bearer, secure, strict):
            k.close()


def fire_then_resolve(urls, batch, notified, what):
    """Posts batch to each URL and waits until notified(1); then posts it resolved
    and waits until notified(2)."""
    for u in urls:
        assert post(u, batch).status_code == 200
    wait_for(lambda: notified(1), timeout=15, what=f"{what}: firing")
    t1 = iso(time.time())
    for a in batch:
        a["endsAt"] = t1
    for u in urls:
        assert post(u, batch).status_code == 200
    wait_for(lambda: notified(2), timeout=15, what=f"{what}: resolved")


PD_YML = """route:
  receiver: pd
  group_by: [alertname]
  group_wait: 500ms
  group_interval: 1s
receivers:
  - name: pd
    pagerduty_configs:
      - routing_key: abc123
        url: {plain}
      - routing_key: 'key-{{{{ .CommonLabels.team }}}}'
        url: {custom}
        severity: '{{{{ if .CommonLabels.severity }}}}{{{{ .CommonLabels.severity }}}}{{{{ else }}}}warning{{{{ end }}}}'
        class: cls
        component: '{{{{ .GroupLabels.alertname }}}}'
        group: grp
        source: '{{{{ .CommonLabels.instance }}}}'
        description: '{{{{ range .Alerts }}}}{{{{ .Annotations.summary }}}} {{{{ end }}}}'
        details:
          team: '{{{{ .CommonLabels.team }}}}'
          firing: 'custom firing'
        links:
          - href: 'http://runbook/{{{{ .GroupLabels.alertname }}}}'
            text: runbook
          - href: ''
            text: dropped
        images:
          - src: 'http://img/a.png'
            alt: a
            href: 'http://img'
"""


def test_pagerduty_like_alertmanager(start, tmp_path):
    """PagerDuty Events API v2 messages - the defaults (summary, source, severity,
    custom_details with the alert lists, client and its URL, dedup_key) and every
    templated field - are the same from cairn and from Debian's Alertmanager, for the
    trigger and then the resolve."""
    sinks = {k: Sink(status=202) for k in ("c-plain", "c-custom", "a-plain", "a-custom")}
    am = None
    try:
        def yml(who):
            return PD_YML.format(plain=sinks[who + "-plain"].url, custom=sinks[who + "-custom"].url)
        _, curl, _ = start_alerts(start, tmp_path, yml("c"))
        am, aurl = start_alertmanager(tmp_path, yml("a"), external_url=curl)
        t0 = iso(time.time())  # started now: group_wait holds the pair together (an older
        # startsAt makes Alertmanager flush on the first alert, racing the second)
        batch = [{"labels": {"alertname": "Lag", "instance": "db1", "team": "data", "severity": "critical"},
                  "annotations": {"summary": 'replica <behind> & "late"'}, "startsAt": t0,
                  "generatorURL": "http://prom/graph?g0.expr=up"},
                 {"labels": {"alertname": "Lag", "instance": "db2", "team": "data"},
                  "annotations": {"summary": "ünïcode " + "x" * 1100}, "startsAt": t0}]
        fire_then_resolve((curl, aurl), batch, lambda k: all(len(s.got) >= k for s in sinks.values()),
                          "all four PagerDuty sinks")
        for kind in ("plain", "custom"):
            c, a = sinks["c-" + kind].bodies()[:2], sinks["a-" + kind].bodies()[:2]
            assert [m["event_action"] for m in c] == ["trigger", "resolve"], c
            assert c == a, (kind, request_diff(c, a))
        first = sinks["c-custom"].bodies()[0]
        assert first["routing_key"] == "key-data" and first["payload"]["severity"] == "warning"
        assert len(first["payload"]["summary"]) == 1024 and first["payload"]["summary"].endswith("…")
        assert [l["text"] for l in first["links"]] == ["runbook"]
        assert sinks["c-plain"].headers[0]["Content-Type"] == "application/json"
        # the routing key is a secret, in the status as in Alertmanager's
        for u in (curl, aurl):
            original = requests.get(u + "/api/v2/status", timeout=5).json()["config"]["original"]
            assert "abc123" not in original and "routing_key: <secret>" in original, original
    finally:
        if am:
            am.terminate()
            am.wait(20)
        for s in sinks.values():
            s.close()


OG_YML = """route:
  receiver: og
  group_by: [alertname]
  group_wait: 500ms
  group_interval: 1s
receivers:
  - name: og
    opsgenie_configs:
      - api_key: key1
        api_url: {plain}
      - api_key: 'key-{{{{ .CommonLabels.team }}}}'
        api_url: {custom}
        message: 'msg {{{{ .GroupLabels.alertname }}}} {{{{ range .Alerts }}}}{{{{ .Annotations.summary }}}}{{{{ end }}}}'
        description: 'desc {{{{ .CommonLabels.team }}}}'
        source: src
        details: {{team: '{{{{ .CommonLabels.team }}}}', alertname: overridden}}
        responders:
          - {{name: 'ops,dev', type: teams}}
          - {{username: bob, type: user}}
          - {{id: '{{{{ .CommonLabels.nothere }}}}', type: team}}
        tags: 'a, b ,,c'
        note: 'note {{{{ .Status }}}}'
        priority: P2
        entity: ent
        actions: 'restart,ping'
"""


def request_diff(c, a):
    """Where two lists of captured requests differ, field by field, short enough to read
    in a failed assertion (pytest cuts long reprs)."""
    out = []
    if len(c) != len(a):
        out.append(("count", len(c), len(a)))
    for i, (x, y) in enumerate(zip(c, a)):
        for j, (u, v) in enumerate(zip(x, y)):
            if u == v:
                continue
            if isinstance(u, dict) and isinstance(v, dict):
                for k in sorted(set(u) | set(v)):
                    if u.get(k) != v.get(k):
                        out.append((i, k, repr(u.get(k))[:400], repr(v.get(k))[:400]))
            else:
                out.append((i, j, repr(u)[:400], repr(v)[:400]))
    return out


class GenieSink(Sink):
    """A Sink that also keeps each request's path and Authorization."""

    def __init__(self):
        super().__init__(status=202)
        sink = self
        self.requests = []
        handler = self.srv.RequestHandlerClass

        def do_POST(h):
            body = h.rfile.read(int(h.headers["Content-Length"]))
            sink.requests.append((h.path, h.headers.get("Authorization"), json.loads(body)))
            h.send_response(202)
            h.send_header("Content-Length", "0")
            h.end_headers()
        handler.do_POST = do_POST
        self.url = self.url.rsplit("/", 1)[0] + "/og/"


def test_opsgenie_like_alertmanager(start, tmp_path):
    """OpsGenie Alert API v2 requests - the create with the defaults (message,
    description with the alert lists, source, details from the common labels) or
    with every field templated (responders with a teams split, tags, actions), and the
    close when resolved, with the GenieKey - are the same from cairn and from Debian's
    Alertmanager."""
    sinks = {k: GenieSink() for k in ("c-plain", "c-custom", "a-plain", "a-custom")}
    am = None
    try:
        def yml(who):
            return OG_YML.format(plain=sinks[who + "-plain"].url, custom=sinks[who + "-custom"].url)
        _, curl, _ = start_alerts(start, tmp_path, yml("c"))
        am, aurl = start_alertmanager(tmp_path, yml("a"), external_url=curl)
        t0 = iso(time.time())  # started now: group_wait holds the pair together (an older
        # startsAt makes Alertmanager flush on the first alert, racing the second)
        batch = [{"labels": {"alertname": "Lag", "instance": "db1", "team": "data", "severity": "critical"},
                  "annotations": {"summary": 'replica <behind> & "late" ' + "ÿ" * 150, "runbook": "rb"},
                  "startsAt": t0, "generatorURL": "http://prom/graph?g0.expr=up"},
                 {"labels": {"alertname": "Lag", "instance": "db2", "team": "data"},
                  "annotations": {"runbook": "rb"}, "startsAt": t0}]
        fire_then_resolve((curl, aurl), batch, lambda k: all(len(s.requests) >= k for s in sinks.values()),
                          "all four OpsGenie sinks")
        for kind in ("plain", "custom"):
            c, a = sinks["c-" + kind].requests[:2], sinks["a-" + kind].requests[:2]
            assert c == a, (kind, request_diff(c, a))
        create, close = sinks["c-custom"].requests[:2]
        assert create[0] == "/og/v2/alerts" and create[1] == "GenieKey key-data"
        assert close[0].startswith("/og/v2/alerts/") and close[0].endswith("/close?identifierType=alias")
        assert len(create[2]["message"]) == 130 and create[2]["message"].endswith("…")
        assert [r.get("name") for r in create[2]["responders"]][:2] == ["ops", "dev"]
        assert create[2]["tags"] == ["a", " b ", "c"]
    finally:
        if am:
            am.terminate()
            am.wait(20)
        for s in sinks.values():
            s.close()
