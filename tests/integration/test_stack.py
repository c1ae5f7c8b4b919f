"""`cairn up`: the default stack end to end, restarts, graceful stop, start failures."""
import json
import os
import re
import signal
import socket
import subprocess
import time

import dns.exception
import dns.message
import dns.query
import requests
import urllib3

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

from conftest import CAIRN, free_port, pid_alive, wait_for, write_stack

APPS = {"app-1": 9101, "app-2": 9102, "app-3": 9103}


def table_pids(out):
    """Service name -> pid, from the endpoint table `cairn up` prints when ready."""
    pids = {}
    for line in out.splitlines():
        m = re.match(r"^(app-\d)\s+demo-app\s+(\d+)\s+http\s+(\S+)", line)
        if m:
            pids[m.group(1)] = int(m.group(2))
    return pids


def lb_pid(out, name="lb"):
    m = re.search(r"^%s\s+edge\s+(\d+)" % name, out, re.M)
    return int(m.group(1))


def test_default_stack_serves_restarts_and_stops(start):
    up = start(["up"])
    pids = wait_for(lambda: len(table_pids(up.stdout())) == 3 and table_pids(up.stdout()),
                    timeout=15, what="endpoint table")
    assert "SERVICE" in up.stdout() and "http://127.0.0.1:9101/" in up.stdout()

    # the demo page and its assets, through a real HTTP client
    for name, port in APPS.items():
        r = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert r.status_code == 200
        assert name in r.text
        assert '<script src="/static/app.js"></script>' in r.text
        assert 'href="/static/style.css"' in r.text
        h = requests.get(f"http://127.0.0.1:{port}/api/hello", timeout=5)
        assert h.headers["Cache-Control"] == "no-store"
        assert h.json()["instance"] == name
        assert h.json()["pid"] == pids[name]
    js = requests.get("http://127.0.0.1:9101/static/app.js", timeout=5)
    assert js.status_code == 200
    assert js.headers["Cache-Control"] == "public, max-age=3600"
    assert js.headers["Content-Type"].startswith("text/javascript")
    etag, lm = js.headers["ETag"], js.headers["Last-Modified"]
    # the same asset has the same validators on every instance (they sit behind one cache)
    other = requests.get("http://127.0.0.1:9103/static/app.js", timeout=5)
    assert other.headers["ETag"] == etag and other.headers["Last-Modified"] == lm
    r = requests.get("http://127.0.0.1:9102/static/app.js", headers={"If-None-Match": etag}, timeout=5)
    assert r.status_code == 304 and r.content == b""
    r = requests.get("http://127.0.0.1:9102/static/style.css", headers={"If-Modified-Since": lm},
                     timeout=5)
    assert r.status_code == 304
    r = requests.get("http://127.0.0.1:9102/static/app.js", headers={"If-None-Match": '"other"'},
                     timeout=5)
    assert r.status_code == 200 and r.text.startswith("// cairn demo app")

    # the load balancer spreads requests over the three instances
    seen = {requests.get("http://127.0.0.1:8090/api/hello", timeout=5).json()["instance"]
            for _ in range(30)}
    assert seen == set(APPS)
    assert "http://127.0.0.1:8090/" in up.stdout() and "http://127.0.0.1:9902/" in up.stdout()

    # the CDN in front: /static/ is cached, the rest passes; HTTPS with its own certificate
    r1 = requests.get("http://127.0.0.1:8080/static/style.css", timeout=5)
    r2 = requests.get("http://127.0.0.1:8080/static/style.css", timeout=5)
    assert r1.status_code == 200 and r2.headers["X-Cache"] == "HIT" and r2.content == r1.content
    assert requests.get("http://127.0.0.1:8080/api/hello", timeout=5).json()["instance"] in APPS
    r = requests.get("https://127.0.0.1:8443/api/hello", timeout=5, verify=False)
    assert r.status_code == 200
    assert os.path.exists(os.path.join(up.cwd, "cairn-data", "certs", "site.pem"))

    # the DNS entry point answers the GSLB name with the healthy region (eu)
    def gslb_answer():
        m = dns.message.make_query("app.cairn.test.", "A")
        try:
            r = dns.query.udp(m, "127.0.0.1", port=5353, timeout=0.5)
        except dns.exception.Timeout:
            return None
        return sorted(x.to_text() for rr in r.answer for x in rr)
    assert wait_for(gslb_answer, timeout=10, what="dns answer") == ["127.0.0.1"]
    st = requests.get("http://127.0.0.1:9953/api/gslb", timeout=5).json()
    assert st["names"][0]["name"] == "app.cairn.test"
    assert "dns://127.0.0.1:5353" in up.stdout()

    # the metrics service scrapes every service of the stack with no configuration
    def scraped():
        r = requests.get("http://127.0.0.1:9090/api/v1/series", params={"match[]": "up"}, timeout=5)
        return {s["job"] for s in r.json()["data"]} >= {"dns", "cdn", "lb", "app-1", "app-2",
                                                         "app-3", "metrics", "alerts", "s3", "registry", "logs",
                                                         "log-agent", "traces", "backup"}
    wait_for(scraped, timeout=20, what="every service scraped")

    # the alerts service takes alerts; the generated metrics config points at it
    r = requests.post("http://127.0.0.1:9093/api/v2/alerts", json=[{"labels": {"alertname": "Smoke"}}],
                      timeout=5)
    assert r.status_code == 200
    assert requests.get("http://127.0.0.1:9093/api/v2/alerts", timeout=5).json()[0]["labels"] == {
        "alertname": "Smoke"}
    cfg = requests.get("http://127.0.0.1:9090/api/v1/status/config", timeout=5).json()["data"]["yaml"]
    assert "127.0.0.1:9093" in cfg

    # object storage with the key written at first start, in awscli's format
    cred = open(os.path.join(up.cwd, "cairn-data", "s3", "credentials")).read()
    assert cred.startswith("[cairn]\naws_access_key_id = ")
    assert "s3 access: AWS_SHARED_CREDENTIALS_FILE" in up.stderr()
    r = requests.get("http://127.0.0.1:9000/", timeout=5)
    assert r.status_code == 403 and b"<Code>AccessDenied</Code>" in r.content
    # the backup service backs the metrics store up on demand, in restic's format
    r = requests.post("http://127.0.0.1:9095/api/jobs/metrics/run", timeout=5)
    assert r.status_code == 202

    def backed_up():
        jobs = requests.get("http://127.0.0.1:9095/api/jobs", timeout=5).json()["jobs"]
        return next(j for j in jobs if j["name"] == "metrics")["last_snapshot"]
    snap = wait_for(backed_up, timeout=60, what="the metrics backup")
    assert os.path.exists(os.path.join(up.cwd, "cairn-data", "backup", "password"))
    snaps = subprocess.run(["restic", "-r", os.path.join(up.cwd, "cairn-data", "backup", "repo"), "--no-cache",
                            "--password-file", os.path.join(up.cwd, "cairn-data", "backup", "password"),
                            "snapshots", "--json"], capture_output=True, text=True, timeout=60)
    assert snaps.returncode == 0, snaps.stderr
    assert [s["id"] for s in json.loads(snaps.stdout)] == [snap]
    # the image registry answers the OCI API's version check
    r = requests.get("http://127.0.0.1:5000/v2/", timeout=5)
    assert r.status_code == 200 and r.headers["Docker-Distribution-API-Version"] == "registry/2.0"

    # the log store takes a push and answers LogQL
    t = time.time_ns()
    r = requests.post("http://127.0.0.1:3100/loki/api/v1/push", timeout=5, json={
        "streams": [{"stream": {"app": "smoke"}, "values": [[str(t), "status=503 path=/x"]]}]})
    assert r.status_code == 204
    r = requests.get("http://127.0.0.1:3100/loki/api/v1/query_range", timeout=5, params={
        "query": '{app="smoke"} |= "status=503"', "start": str(t - 10**9), "end": str(t + 10**9)})
    assert r.json()["data"]["result"][0]["values"][0][1] == "status=503 path=/x"
    assert "http://127.0.0.1:3100/" in up.stdout()
    # every service's log lines reach the store through the log agent, the lb's
    # access log included: the request above is there with its status
    def lb_access():
        r = requests.get("http://127.0.0.1:3100/loki/api/v1/query_range", timeout=5, params={
            "query": '{service="lb", role="edge", level="info"} |= "target=/api/hello" |= "status=200"',
            "start": str(t - 600 * 10**9), "end": str(time.time_ns()), "limit": "5"})
        return r.json()["data"]["result"]
    assert wait_for(lb_access, timeout=15, what="lb access lines in logs")
    r = requests.get("http://127.0.0.1:3100/loki/api/v1/label/service/values", timeout=5,
                     params={"start": str(t - 600 * 10**9)})
    assert {"dns", "cdn", "lb", "metrics", "logs", "app-1"} <= set(r.json()["data"])
    assert "syslog://127.0.0.1:5514" in up.stdout()

    # the trace store: OTLP in on 4318, the same trace out of Jaeger's 16686, Tempo's
    # 3200 and Zipkin's 9411
    tid = "%032x" % (time.time_ns() & (2**120 - 1))
    span = {"traceId": tid, "spanId": "00000000000000aa", "name": "smoke", "kind": 2,
            "startTimeUnixNano": str(t), "endTimeUnixNano": str(t + 1000)}
    r = requests.post("http://127.0.0.1:4318/v1/traces", timeout=5, json={"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "smoke"}}]},
        "scopeSpans": [{"spans": [span]}]}]})
    assert r.status_code == 200, r.text
    assert requests.get(f"http://127.0.0.1:16686/api/traces/{tid}", timeout=5).json()["data"][0]["spans"][0][
        "operationName"] == "smoke"
    assert requests.get(f"http://127.0.0.1:3200/api/traces/{tid}", timeout=5).status_code == 200
    assert requests.get(f"http://127.0.0.1:9411/api/v2/trace/{tid}", timeout=5).json()[0]["name"] == "smoke"
    for url in ("http://127.0.0.1:4318/", "grpc://127.0.0.1:4317", "http://127.0.0.1:9411/",
                "http://127.0.0.1:16686/", "http://127.0.0.1:3200/"):
        assert url in up.stdout()

    # kill one service: the supervisor logs why and restarts it
    victim = pids["app-2"]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: "killed by SIGKILL" in up.stderr(), timeout=5, what="crash log line")

    def new_pid():
        r = requests.get("http://127.0.0.1:9102/api/hello", timeout=1)
        return r.status_code == 200 and r.json()["pid"] != victim and r.json()["pid"]
    restarted = wait_for(new_pid, timeout=10, what="app-2 restarted")
    assert re.search(r'msg="service died, restarting" service=app-2 pid=%d' % victim, up.stderr())
    assert not pid_alive(victim)

    # SIGTERM: everything gone within the 10 s bound, exit code 0
    t0 = time.monotonic()
    up.signal(signal.SIGTERM)
    assert up.wait(timeout=10) == 0
    children = [pids["app-1"], pids["app-3"], restarted, lb_pid(up.stdout()), lb_pid(up.stdout(), "cdn")]
    wait_for(lambda: not any(pid_alive(p) for p in children), timeout=10 - (time.monotonic() - t0),
             what="children gone")
    assert "stack stopped" in up.stderr()
    # every service ended cleanly (under ASan a leak would make this non-zero)
    stopped = re.findall(r'msg="service stopped" service=(\S+) pid=\d+ how="([^"]+)"', up.stderr())
    assert len(stopped) == 15 and all(how == "exited with status 0" for _, how in stopped), stopped
    for port in list(APPS.values()) + [8090, 9902, 8080, 8443, 9901, 9953, 5353, 9090, 9093, 9000, 5000, 3100, 9080, 5514,
                                          4318, 4317, 9411, 16686, 3200, 3000, 9095]:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0


def test_up_selected_services_only(start, tmp_path):
    p1, p2 = free_port(), free_port()
    path = write_stack(tmp_path, f"""\
services:
  one: {{role: demo-app, listen: ["127.0.0.1:{p1}"]}}
  two: {{role: demo-app, listen: ["127.0.0.1:{p2}"]}}
""")
    up = start(["up", "-c", path, "two"])
    wait_for(lambda: "stack ready" in up.stderr(), timeout=10, what="ready")
    assert requests.get(f"http://127.0.0.1:{p2}/healthz", timeout=2).status_code == 200
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", p1)) != 0
    up.signal(signal.SIGINT)
    assert up.wait(timeout=10) == 0
    assert os.path.isdir(tmp_path / "cairn-data")   # data_dir relative to the stack file


def test_up_fails_when_a_port_is_taken(start, tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    ok_port = free_port()
    path = write_stack(tmp_path, f"""\
services:
  good: {{role: demo-app, listen: ["127.0.0.1:{ok_port}"]}}
  bad: {{role: demo-app, listen: ["127.0.0.1:{port}"]}}
""")
    try:
        up = start(["up", "-c", path])
        code = up.wait(timeout=15)
        assert code != 0
        err = up.stderr()
        assert "svc=bad" in err and "cannot listen" in err and "Address already in use" in err
        assert 'msg="service failed to start" service=bad' in err
        # the other service was stopped too
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", ok_port)) != 0, timeout=10,
                 what="good service stopped")
    finally:
        busy.close()


def test_up_refuses_bad_config_with_exit_2(tmp_path):
    path = write_stack(tmp_path, "services:\n  a: {role: demo-app, listen: [nope]}\n")
    r = subprocess.run([CAIRN, "up", "-c", path], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert f"{path}:2:32: services.a.listen[0]" in r.stderr
