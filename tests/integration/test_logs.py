"""role logs: Loki's push and query API, LogQL, durability, limits, with real clients."""
import gzip
import json
import os
import re
import signal
import subprocess
import time

import pytest
import requests
import snappy

from conftest import ROOT, free_port, wait_for, write_stack

LOGQL = os.path.join(os.path.dirname(ROOT), "shared", "conformance", "logql")
NODE = os.path.join(ROOT, "tests", "integration", "node")


def start_logs(start, tmp_path, port=None, extra="", name="cairn"):
    port = port or free_port()
    stack = write_stack(tmp_path, f"""
data_dir: data
services:
  logs:
    role: logs
    listen: ["127.0.0.1:{port}"]
{extra}""")
    p = start(["run", "logs", "-c", stack], name=name)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: requests.get(url + "/ready", timeout=1).status_code == 200, what="logs ready")
    return p, url


def now_ns():
    return time.time_ns()


def push(url, streams, org=None, **kw):
    headers = {"Content-Type": "application/json"}
    if org:
        headers["X-Scope-OrgID"] = org
    return requests.post(url + "/loki/api/v1/push", data=json.dumps({"streams": streams}), headers=headers,
                         timeout=10, **kw)


def query_range(url, q, start, end, org=None, **params):
    headers = {"X-Scope-OrgID": org} if org else {}
    r = requests.get(url + "/loki/api/v1/query_range", headers=headers, timeout=30,
                     params=dict(query=q, start=str(start), end=str(end), **params))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["status"] == "success"
    return doc["data"]


def lines_of(data):
    assert data["resultType"] == "streams"
    return sorted((int(ts), line) for s in data["result"] for ts, line in s["values"])


# ---- pb: a PushRequest by hand, as Loki's protobuf defines it ----

def pb_varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def pb_bytes(field, data):
    return pb_varint(field << 3 | 2) + pb_varint(len(data)) + data


def pb_push(labels, entries):
    """entries: (ns, line, {metadata})."""
    es = b""
    for ns, line, meta in entries:
        ts = pb_varint(1 << 3) + pb_varint(ns // 10**9) + pb_varint(2 << 3) + pb_varint(ns % 10**9)
        e = pb_bytes(1, ts) + pb_bytes(2, line.encode())
        for k, v in meta.items():
            e += pb_bytes(3, pb_bytes(1, k.encode()) + pb_bytes(2, v.encode()))
        es += pb_bytes(2, e)
    return pb_bytes(1, pb_bytes(1, labels.encode()) + es)


# ---- the conformance scripts ----

def test_logql_conformance(start, tmp_path):
    runner = os.path.join(LOGQL, "logqltest.py")
    if not os.path.exists(runner):
        pytest.skip("the shared conformance material is not next to this checkout")
    _, url = start_logs(start, tmp_path)
    scripts = sorted(os.path.join(LOGQL, f) for f in os.listdir(LOGQL) if f.endswith(".logqltest"))
    r = subprocess.run(["/usr/bin/python3", runner, url] + scripts, capture_output=True, text=True, timeout=900)
    last = r.stdout.strip().splitlines()[-1]
    m = re.match(r"(\d+) passed, (\d+) failed", last)
    assert m, r.stdout[-3000:] + r.stderr[-2000:]
    fails = [l for l in r.stdout.splitlines() if l.startswith("FAIL")]
    assert int(m.group(2)) == 0, "\n".join(fails[:30])
    assert int(m.group(1)) >= 1000


# ---- push and query ----

def test_push_json_then_query_shapes(start, tmp_path):
    _, url = start_logs(start, tmp_path)
    t0 = now_ns() - 60 * 10**9
    lines = [f'level=info method=GET path=/a status={200 if i % 4 else 503} took={i}ms' for i in range(40)]
    r = push(url, [{"stream": {"app": "web", "env": "prod"},
                    "values": [[str(t0 + i * 10**9), l] for i, l in enumerate(lines)]},
                   {"stream": {"app": "db", "env": "prod", "empty": ""},
                    "values": [[str(t0 + 5 * 10**9), "slow query took=2s", {"trace_id": "abc123"}]]}])
    assert r.status_code == 204, r.text
    start_s, end_s = t0 - 10**9, t0 + 60 * 10**9
    # a log query: newest first by default, limit applied across streams
    d = query_range(url, '{env="prod"}', start_s, end_s, limit=5)
    got = [int(ts) for s in d["result"] for ts, _ in s["values"]]
    assert len(got) == 5 and min(got) == t0 + 35 * 10**9
    assert d["result"][0]["values"][0][0] > d["result"][0]["values"][-1][0]     # newest first
    assert "summary" in d["stats"] and d["stats"]["summary"]["totalLinesProcessed"] >= 5
    # forward, a filter and a parser: labels extracted into the stream
    d = query_range(url, '{app="web"} |= "status=503" | logfmt | took > 10ms', start_s, end_s, direction="forward",
                    limit=100)
    vals = lines_of(d)
    assert [l for _, l in vals] == [lines[i] for i in (12, 16, 20, 24, 28, 32, 36)]
    assert all(s["stream"]["status"] == "503" and s["stream"]["method"] == "GET" for s in d["result"])
    # structured metadata reach the stream labels; an empty stream label was dropped on write
    d = query_range(url, '{app="db"}', start_s, end_s)
    assert d["result"][0]["stream"] == {"app": "db", "env": "prod", "trace_id": "abc123"}
    # a metric query: matrix with values as strings
    # (the window is (t - 1m, t]: at t0 + 59s it holds all 40 lines)
    d = query_range(url, 'sum by (status) (count_over_time({app="web"} | logfmt [1m]))', t0 + 59 * 10**9,
                    t0 + 59 * 10**9, step="1")
    assert d["resultType"] == "matrix"
    by = {s["metric"]["status"]: s["values"] for s in d["result"]}
    assert by["503"][0][1] == "10" and by["200"][0][1] == "30"
    # instant: a vector
    r = requests.get(url + "/loki/api/v1/query", timeout=10,
                     params={"query": 'sum(rate({app="web"}[1m]))', "time": str(t0 + 59 * 10**9)})
    assert r.status_code == 200
    v = r.json()["data"]
    assert v["resultType"] == "vector" and float(v["result"][0]["value"][1]) == pytest.approx(40 / 60)
    # labels, values, series, index stats
    p = {"start": str(start_s), "end": str(end_s)}
    assert requests.get(url + "/loki/api/v1/labels", params=p, timeout=5).json()["data"] == ["app", "env"]
    assert requests.get(url + "/loki/api/v1/label/app/values", params=p, timeout=5).json()["data"] == ["db", "web"]
    s = requests.get(url + "/loki/api/v1/series", params=dict(p, **{"match[]": '{app="web"}'}), timeout=5).json()
    assert s["data"] == [{"app": "web", "env": "prod"}]
    st = requests.get(url + "/loki/api/v1/index/stats", params=dict(p, query='{env="prod"}'), timeout=5).json()
    assert st["streams"] == 2 and st["entries"] == 41
    vol = requests.get(url + "/loki/api/v1/index/volume", params=dict(p, query='{env="prod"}'), timeout=5).json()
    assert vol["data"]["resultType"] == "vector" and vol["data"]["result"][0]["metric"] == {"env": "prod"}
    f = requests.get(url + "/loki/api/v1/format_query", params={"query": 'sum by(app)(rate({app="web"}|="x"[5m]))'},
                     timeout=5).json()
    assert f["data"] == 'sum by (app)(rate({app="web"} |= "x"[5m]))'
    # a wrong query: 400 with Loki's message
    r = requests.get(url + "/loki/api/v1/query", params={"query": 'sum(rate({app="web"}[1m])'}, timeout=5)
    assert r.status_code == 400 and "parse error" in r.text


def test_push_protobuf_snappy_and_gzip_json(start, tmp_path):
    _, url = start_logs(start, tmp_path)
    t0 = now_ns() - 30 * 10**9
    body = snappy.compress(pb_push('{app="pb", region="eu"}',
                                   [(t0 + i, f"line {i}", {"user": "u1"} if i == 2 else {}) for i in range(3)]))
    r = requests.post(url + "/loki/api/v1/push", data=body, headers={"Content-Type": "application/x-protobuf"},
                      timeout=5)
    assert r.status_code == 204, r.text
    js = json.dumps({"streams": [{"stream": {"app": "gz"}, "values": [[str(t0 - 1), "zipped"]]}]}).encode()
    r = requests.post(url + "/loki/api/v1/push", data=gzip.compress(js), timeout=5,
                      headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 204, r.text
    d = query_range(url, '{app=~"pb|gz"}', t0 - 10**9, t0 + 10**9, direction="forward")
    assert [l for _, l in lines_of(d)] == ["zipped", "line 0", "line 1", "line 2"]
    assert {"app": "pb", "region": "eu", "user": "u1"} in [s["stream"] for s in d["result"]]
    # malformed bodies: 400, nothing stored
    r = requests.post(url + "/loki/api/v1/push", data=b"\xff\x00garbage",
                      headers={"Content-Type": "application/x-protobuf"}, timeout=5)
    assert r.status_code == 400
    r = requests.post(url + "/loki/api/v1/push", data=b'{"streams":[{"stream":{"a":"b"},"values":[["x"]]}]}',
                      headers={"Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 400


def test_winston_loki_pusher(start, tmp_path):
    """A Loki pusher from npm (winston-loki: protobuf + snappy) writes; its lines come back."""
    if not os.path.isdir(os.path.join(NODE, "node_modules", "winston-loki")):
        pytest.skip("npm clients not installed (make integration installs them)")
    _, url = start_logs(start, tmp_path)
    r = subprocess.run(["node", os.path.join(NODE, "loki_push.js"), url, "shop", "50"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    end = now_ns() + 10**9

    def count():
        d = query_range(url, 'sum(count_over_time({app="shop", job="winston"}[5m]))', end, end, step="1")
        return d["result"] and d["result"][0]["values"][-1][1]
    assert wait_for(count, timeout=10, what="winston's lines") == "50"
    d = query_range(url, '{app="shop"} |= "status=500"', end - 300 * 10**9, end, limit=100)
    assert len(lines_of(d)) == 5
    assert all(s["stream"]["level"] == "error" for s in d["result"])


def test_tenants_are_separate(start, tmp_path):
    _, url = start_logs(start, tmp_path)
    t = now_ns() - 10**9
    assert push(url, [{"stream": {"app": "x"}, "values": [[str(t), "from a"]]}], org="team-a").status_code == 204
    assert push(url, [{"stream": {"app": "x"}, "values": [[str(t), "from b"]]}], org="team-b").status_code == 204
    assert [l for _, l in lines_of(query_range(url, '{app="x"}', t - 10**9, t + 10**9, org="team-a"))] == ["from a"]
    assert [l for _, l in lines_of(query_range(url, '{app="x"}', t - 10**9, t + 10**9, org="team-b"))] == ["from b"]
    assert lines_of(query_range(url, '{app="x"}', t - 10**9, t + 10**9)) == []    # the default tenant


def test_limits_refuse_entries_not_the_batch(start, tmp_path):
    _, url = start_logs(start, tmp_path)
    t = now_ns() - 10**9
    old = t - 8 * 24 * 3600 * 10**9
    r = push(url, [{"stream": {"app": "lim"}, "values": [[str(t), "ok 1"], [str(t + 1), "x" * 300000],
                                                         [str(old), "too old"], [str(t + 2), "ok 2"]]},
                   {"stream": {f"l{i}": "v" for i in range(16)}, "values": [[str(t), "too many labels"]]}])
    assert r.status_code == 400
    assert "Max entry size '256000' bytes exceeded" in r.text
    assert "timestamp too old" in r.text
    assert "has 16 label names; limit 15" in r.text
    assert "total ignored: 3 out of 5" in r.text
    assert [l for _, l in lines_of(query_range(url, '{app="lim"}', t - 10**9, t + 10**9))] == ["ok 1", "ok 2"]


def test_ingestion_rate_limit_answers_429(start, tmp_path):
    _, url = start_logs(start, tmp_path, extra="""    limits:
      ingestion_rate_mb: 0.01
      ingestion_burst_size_mb: 0.02
""")
    t = now_ns() - 10**9
    big = [[str(t + i), "y" * 1000] for i in range(30)]
    r = push(url, [{"stream": {"app": "rate"}, "values": big}])
    assert r.status_code == 429 and "Ingestion rate limit exceeded" in r.text
    # a smaller push fits the burst
    assert push(url, [{"stream": {"app": "rate"}, "values": big[:5]}]).status_code == 204


def test_acknowledged_pushes_survive_kill9_and_blocks_survive_restart(start, tmp_path):
    port = free_port()
    p, url = start_logs(start, tmp_path, port=port)
    t0 = now_ns() - 120 * 10**9
    n = 0
    for b in range(20):
        vals = [[str(t0 + (b * 50 + i) * 10**6), f"batch {b} line {i}"] for i in range(50)]
        assert push(url, [{"stream": {"app": "dur", "b": str(b % 3)}, "values": vals}]).status_code == 204
        n += 50
    p.signal(signal.SIGKILL)
    p.wait(10)
    p, url = start_logs(start, tmp_path, port=port, name="second")
    d = query_range(url, 'sum(count_over_time({app="dur"}[5m]))', now_ns(), now_ns(), step="1")
    assert d["result"][0]["values"][0][1] == str(n)
    # a graceful stop writes a block; the next start reads it (and the WAL is empty)
    p.signal(signal.SIGTERM)
    assert p.wait(20) == 0
    blocks = os.listdir(tmp_path / "data" / "logs" / "blocks")
    assert [b for b in blocks if b.endswith(".blk")], blocks
    p, url = start_logs(start, tmp_path, port=port, name="third")
    d = query_range(url, '{app="dur", b="1"}', t0 - 10**9, now_ns(), limit=5000, direction="forward")
    got = lines_of(d)
    assert len(got) == sum(50 for b in range(20) if b % 3 == 1)
    assert got[0][1] == "batch 1 line 0"
    d = query_range(url, 'sum(count_over_time({app="dur"} |= "line 7" [5m]))', now_ns(), now_ns(), step="1")
    assert d["result"][0]["values"][0][1] == "20"


def test_torn_wal_tail_is_cut_and_the_rest_kept(start, tmp_path):
    port = free_port()
    p, url = start_logs(start, tmp_path, port=port)
    t = now_ns() - 10**9
    assert push(url, [{"stream": {"app": "torn"}, "values": [[str(t), "kept"]]}]).status_code == 204
    p.signal(signal.SIGKILL)
    p.wait(10)
    wal = tmp_path / "data" / "logs" / "wal"
    seg = sorted(os.listdir(wal))[-1]
    with open(wal / seg, "ab") as f:          # a record cut short by a crash mid-write
        f.write(b"\x40\x00\x00\x00\x12\x34\x56\x78partial")
    p, url = start_logs(start, tmp_path, port=port, name="second")
    assert [l for _, l in lines_of(query_range(url, '{app="torn"}', t - 10**9, t + 10**9))] == ["kept"]
    assert "torn record" in p.stderr()
    assert push(url, [{"stream": {"app": "torn"}, "values": [[str(t + 1), "after"]]}]).status_code == 204


def test_log_pipeline_semantics(start, tmp_path):
    """Parsers and formatters as Loki's documentation describes them."""
    _, url = start_logs(start, tmp_path)
    t = now_ns() - 10 * 10**9
    vals = [
        [str(t), '{"level":"error","req":{"path":"/api","ms":12},"tags":["a"],"msg":"boom"}'],
        [str(t + 1), '10.1.2.3 - - "GET /index.html HTTP/1.1" 200 512'],
        [str(t + 2), "\x1b[31mred\x1b[0m text"],
    ]
    assert push(url, [{"stream": {"app": "p"}, "values": vals}]).status_code == 204
    q = lambda s: query_range(url, s, t - 10**9, t + 10**9, direction="forward")
    d = q('{app="p"} | json | level="error" | line_format "{{.req_path}} took {{.req_ms}}ms: {{.msg | ToUpper}}"')
    assert [l for _, l in lines_of(d)] == ["/api took 12ms: BOOM"]
    d = q('{app="p"} | json path="req.path" | path="/api"')
    assert d["result"][0]["stream"]["path"] == "/api"
    d = q('{app="p"} |> "<_> - - \\"<_>\\" <_> <_>" | pattern "<ip> - - \\"<method> <uri> <_>\\" <status> <size>"'
          ' | status >= 200 | size > 500B')
    assert d["result"][0]["stream"]["ip"] == "10.1.2.3" and d["result"][0]["stream"]["uri"] == "/index.html"
    d = q('{app="p"} |~ "GET (/\\\\w+)" | regexp "GET (?P<page>/\\\\w+)" | label_format what=page | keep app, what')
    assert d["result"][0]["stream"] == {"app": "p", "what": "/index"}
    d = q('{app="p"} |= "text" | decolorize')
    assert [l for _, l in lines_of(d)] == ["red text"]
    d = q('{app="p"} |= ip("10.0.0.0/8")')
    assert len(lines_of(d)) == 1
    d = q('{app="p"} != "GET" | json | __error__="JSONParserErr" | drop __error__, __error_details__')
    assert [l for _, l in lines_of(d)] == [vals[2][1]]


def test_tail_websocket_sends_history_then_live_entries(start, tmp_path):
    """/loki/api/v1/tail with a WebSocket client (python3-websocket): what is there,
    then each push that passes the query, in Loki's message shape."""
    import websocket
    _, url = start_logs(start, tmp_path)
    t = now_ns() - 5 * 10**9
    assert push(url, [{"stream": {"app": "tail"}, "values": [[str(t), "old error one"], [str(t + 1), "old info"]]}]
                ).status_code == 204
    q = requests.utils.quote('{app="tail"} |= "error" | logfmt')
    ws = websocket.create_connection(url.replace("http", "ws") + f"/loki/api/v1/tail?query={q}&limit=10", timeout=5)
    first = json.loads(ws.recv())
    assert [v[1] for s in first["streams"] for v in s["values"]] == ["old error one"]
    assert first["dropped_entries"] is None
    assert push(url, [{"stream": {"app": "tail"}, "values": [[str(now_ns()), "code=500 new error"],
                                                             [str(now_ns()), "all fine"]]},
                      {"stream": {"app": "other"}, "values": [[str(now_ns()), "error elsewhere"]]}]).status_code == 204
    msg = json.loads(ws.recv())
    vals = [(s["stream"], v[1]) for s in msg["streams"] for v in s["values"]]
    assert vals == [({"app": "tail", "code": "500"}, "code=500 new error")]
    ws.close()
    # a tail without the upgrade is refused with a clear message
    r = requests.get(url + "/loki/api/v1/tail", params={"query": '{app="tail"}'}, timeout=5)
    assert r.status_code == 400 and "WebSocket" in r.text


def test_rules_record_into_metrics_and_alert_into_alerts(start, tmp_path):
    """LogQL rules in Loki's format: a recording rule remote-writes to the metrics role,
    an alerting rule with `for` fires into the alerts role (both found in the stack)."""
    lp, mp, ap = free_port(), free_port(), free_port()
    (tmp_path / "rules.yml").write_text("""
groups:
  - name: errors
    interval: 1s
    rules:
      - record: app:errors:count1m
        expr: sum by (app) (count_over_time({app=~".+"} |= "error" [1m]))
        labels: {source: logs}
      - alert: ManyErrors
        expr: sum by (app) (count_over_time({app=~".+"} |= "error" [1m])) > 3
        for: 2s
        labels: {severity: page, team: "{{ $labels.app }}-team"}
        annotations: {summary: "{{ $value }} errors in {{ $labels.app }}"}
""")
    stack = write_stack(tmp_path, f"""
data_dir: data
services:
  logs:
    role: logs
    listen: ["127.0.0.1:{lp}"]
    rules: [rules.yml]
  metrics:
    role: metrics
    listen: ["127.0.0.1:{mp}"]
  alerts:
    role: alerts
    listen: ["127.0.0.1:{ap}"]
""")
    for name in ("metrics", "alerts", "logs"):
        start(["run", name, "-c", stack], name=name)
    for port in (mp, ap):
        wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code == 200,
                 what="ready")
    url = f"http://127.0.0.1:{lp}"
    wait_for(lambda: requests.get(url + "/ready", timeout=1).status_code == 200, what="logs ready")
    t = now_ns() - 10**9
    assert push(url, [{"stream": {"app": "shop"}, "values": [[str(t + i), f"error {i}"] for i in range(5)]}]
                ).status_code == 204

    def recorded():
        r = requests.get(f"http://127.0.0.1:{mp}/api/v1/query", params={"query": "app:errors:count1m"}, timeout=5)
        res = r.json()["data"]["result"]
        return res and res[0]
    s = wait_for(recorded, timeout=15, what="the recorded series in metrics")
    assert s["metric"] == {"__name__": "app:errors:count1m", "app": "shop", "source": "logs"} and s["value"][1] == "5"

    def fired():
        r = requests.get(f"http://127.0.0.1:{ap}/api/v2/alerts", timeout=5).json()
        return [a for a in r if a["labels"].get("alertname") == "ManyErrors"]
    a = wait_for(fired, timeout=15, what="the alert in alerts")[0]
    assert a["labels"] == {"alertname": "ManyErrors", "app": "shop", "severity": "page", "team": "shop-team"}
    assert a["annotations"] == {"summary": "5 errors in shop"}
    # the Prometheus-style rules API Grafana reads
    g = requests.get(url + "/prometheus/api/v1/rules", timeout=5).json()["data"]["groups"][0]
    assert g["name"] == "errors" and g["interval"] == 1 and g["file"].endswith("rules.yml")
    rec, alert = g["rules"]
    assert rec["type"] == "recording" and rec["name"] == "app:errors:count1m"
    assert alert["type"] == "alerting" and alert["state"] == "firing" and alert["duration"] == 2
    assert alert["alerts"][0]["labels"]["app"] == "shop"
    al = requests.get(url + "/prometheus/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    assert [(x["labels"]["alertname"], x["state"]) for x in al] == [("ManyErrors", "firing")]


def test_flushes_while_running_then_compaction_keep_every_entry(start, tmp_path):
    """Blocks written while serving are read from at once; after 8 the older ones are
    merged into one; a restart reads the result with no entry lost or doubled."""
    port = free_port()
    p, url = start_logs(start, tmp_path, port=port, extra="    flush_interval: 1s\n")
    blocks = tmp_path / "data" / "logs" / "blocks"
    t0 = now_ns() - 300 * 10**9
    total = 0
    for b in range(9):
        vals = [[str(t0 + (b * 100 + i) * 10**6), f"batch={b} i={i}"] for i in range(100)]
        assert push(url, [{"stream": {"app": "cmp", "b": str(b % 2)}, "values": vals}]).status_code == 204
        total += 100
        before = p.stderr().count("flushed a block")
        wait_for(lambda: p.stderr().count("flushed a block") > before, timeout=15, what=f"flush {b}")
        # read back at once from the block just written
        d = query_range(url, 'sum(count_over_time({app="cmp"}[10m]))', now_ns(), now_ns(), step="1")
        assert d["result"][0]["values"][0][1] == str(total)
    assert "blocks compacted" in p.stderr()
    assert len([f for f in os.listdir(blocks) if f.endswith(".blk")]) <= 3
    got = lines_of(query_range(url, '{app="cmp"}', t0 - 10**9, now_ns(), limit=5000, direction="forward"))
    assert len(got) == total and len(set(got)) == total
    p.signal(signal.SIGTERM)
    assert p.wait(20) == 0
    p, url = start_logs(start, tmp_path, port=port, name="second")
    got = lines_of(query_range(url, '{app="cmp"}', t0 - 10**9, now_ns(), limit=5000, direction="forward"))
    assert len(got) == total and len(set(got)) == total


def test_a_full_disk_refuses_pushes_clearly_and_loses_nothing(start, tmp_path):
    """The data directory on a 4 MB tmpfs, filled up: a push that does not fit is
    answered 507 with a clear message and nothing of it is stored; what was
    acknowledged stays; once space is back pushes are taken again and survive a
    restart."""
    data = tmp_path / "data"
    data.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(data)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: " + r.stderr.decode()[:200])
    try:
        port = free_port()
        p, url = start_logs(start, tmp_path, port=port)
        t = now_ns() - 60 * 10**9
        acked = 0
        assert push(url, [{"stream": {"app": "disk"}, "values": [[str(t + i), f"kept {i}"] for i in range(100)]}]
                    ).status_code == 204
        acked += 100
        # leave less room than the next push needs
        st = os.statvfs(data)
        ballast = data / "ballast"
        with open(ballast, "wb") as f:
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - 20000))
        big = [[str(t + 1000 + i), "x" * 900 + f" refused {i}"] for i in range(200)]
        r = push(url, [{"stream": {"app": "disk"}, "values": big}])
        assert r.status_code == 507, (r.status_code, r.text)
        assert "No space left on device" in r.text and "nothing was stored" in r.text
        got = [l for _, l in lines_of(query_range(url, '{app="disk"}', t - 10**9, now_ns(), limit=5000))]
        assert len(got) == acked and not any("refused" in l for l in got)
        # space back: taken again
        ballast.unlink()
        assert push(url, [{"stream": {"app": "disk"}, "values": [[str(t + 5000), "after"]]}]).status_code == 204
        acked += 1
        p.signal(signal.SIGTERM)
        assert p.wait(20) == 0
        p, url = start_logs(start, tmp_path, port=port, name="second")
        got = [l for _, l in lines_of(query_range(url, '{app="disk"}', t - 10**9, now_ns(), limit=5000))]
        assert len(got) == acked
        p.signal(signal.SIGTERM)
        p.wait(20)
    finally:
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


def test_needle_queries_through_the_token_index_match_substring_search(start, tmp_path):
    """Literals with whole words inside go through the chunks' token index: counts must
    equal a plain substring count over the same lines, in heads and in blocks."""
    import random
    port = free_port()
    p, url = start_logs(start, tmp_path, port=port, extra="    chunk_target_size: 4KB\n")
    rnd = random.Random(7)
    t0 = now_ns() - 600 * 10**9
    lines = []
    for i in range(3000):
        rid = "%08x-%04x-%04x" % (rnd.getrandbits(32), rnd.getrandbits(16), rnd.getrandbits(16))
        lines.append(f"GET /api/item/{i % 97} status={200 if i % 7 else 500} id={rid} user_{i % 13}")
    for k in range(0, 3000, 500):
        vals = [[str(t0 + (k + i) * 10**6), l] for i, l in enumerate(lines[k:k + 500])]
        assert push(url, [{"stream": {"app": "idx"}, "values": vals}]).status_code == 204
    picks = [lines[1234].split("id=")[1], lines[42].split("id=")[1][3:13], "status=500 id=", "/item/5 ",
             "-" + lines[7].split("-")[1] + "-", "user_1", "no-such-token-here", "m/9 s"]
    def check():
        for lit in picks:
            want = sum(lit in l for l in lines)
            q = 'sum(count_over_time({app="idx"} |= %s [1h]))' % json.dumps(lit)
            d = query_range(url, q, now_ns(), now_ns(), step="1")
            got = int(d["result"][0]["values"][0][1]) if d["result"] else 0
            assert got == want, (lit, got, want)
    check()
    p.signal(signal.SIGTERM)                 # into a block, read back with its token index
    assert p.wait(20) == 0
    p, url = start_logs(start, tmp_path, port=port, name="second", extra="    chunk_target_size: 4KB\n")
    check()


def test_retention_per_stream_selector_then_global(start, tmp_path):
    """retention_stream: the first matching rule's period applies, others get the global
    retention; expired chunks go once they are in blocks, with their block files."""
    _, url = start_logs(start, tmp_path, extra="""    flush_interval: 1s
    retention: 24h
    retention_stream:
      - {selector: '{env="dev"}', period: 1h}
      - {selector: '{app="keep"}', period: 48h}
""")
    old = now_ns() - 2 * 3600 * 10**9                     # two hours ago
    older = now_ns() - 30 * 3600 * 10**9                  # past the global 24h
    for labels, ts in (({"app": "a", "env": "dev"}, old), ({"app": "a", "env": "prod"}, old),
                       ({"app": "keep", "env": "prod"}, older), ({"app": "b", "env": "prod"}, older)):
        assert push(url, [{"stream": labels, "values": [[str(ts), "x"]]}]).status_code == 204

    def streams():
        d = query_range(url, '{app=~".+"}', older - 10**9, now_ns(), limit=100)
        return sorted((s["stream"]["app"], s["stream"]["env"]) for s in d["result"])
    wait_for(lambda: streams() == [("a", "prod"), ("keep", "prod")], timeout=15, what="expired chunks gone")


def test_interval_and_query_timeout(start, tmp_path):
    _, url = start_logs(start, tmp_path, extra="""    limits:
      query_timeout: 1ms
""")
    t = now_ns() - 60 * 10**9
    assert push(url, [{"stream": {"app": "iv"}, "values": [[str(t + i * 10**9), f"n={i}"] for i in range(10)]}]
                ).status_code == 204
    # interval: at most one entry every 3 s, from the start in the asked direction
    d = query_range(url, '{app="iv"}', t, t + 20 * 10**9, direction="forward", interval="3s")
    assert [l for _, l in lines_of(d)] == ["n=0", "n=3", "n=6", "n=9"]
    # a query past query_timeout ends with 504 and says why
    big = [[str(t + 10**9 * 30 + i), "x" * 50 + f" {i} y"] for i in range(20000)]
    assert push(url, [{"stream": {"app": "slow"}, "values": big}]).status_code == 204
    r = requests.get(url + "/loki/api/v1/query_range", timeout=30, params={
        "query": 'count_over_time({app="slow"} |~ ".*x.*[0-9]+ (y|z)$" [5m])', "start": str(t), "end": str(now_ns()),
        "step": "60"})
    assert r.status_code == 504 and "query timed out" in r.text
