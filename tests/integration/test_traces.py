"""role traces: OTLP (HTTP, gRPC) and Zipkin in; Jaeger, Tempo and Zipkin APIs out;
TraceQL; durability, blocks, limits; with real clients (the OpenTelemetry JS SDK,
py_zipkin) and Jaeger's storage fixtures."""
import contextlib
import gzip
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import requests

from conftest import ROOT, free_port, wait_for, write_stack

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

TRACES = os.path.join(os.path.dirname(ROOT), "shared", "conformance", "traces")
NODE = os.path.join(ROOT, "tests", "integration", "node")


class Traces:
    def __init__(self, proc, ports):
        self.p = proc
        self.otlp = f"http://127.0.0.1:{ports['listen']}"
        self.grpc = f"http://127.0.0.1:{ports['grpc']}"
        self.zipkin = f"http://127.0.0.1:{ports['zipkin']}"
        self.jaeger = f"http://127.0.0.1:{ports['jaeger']}"
        self.tempo = f"http://127.0.0.1:{ports['tempo']}"


def start_traces(start, tmp_path, extra="", ports=None, name="cairn"):
    ports = ports or {k: free_port() for k in ("listen", "grpc", "zipkin", "jaeger", "tempo")}
    stack = write_stack(tmp_path, f"""
data_dir: data
services:
  traces:
    role: traces
    listen: ["127.0.0.1:{ports['listen']}"]
    grpc: ["127.0.0.1:{ports['grpc']}"]
    zipkin: ["127.0.0.1:{ports['zipkin']}"]
    jaeger: ["127.0.0.1:{ports['jaeger']}"]
    tempo: ["127.0.0.1:{ports['tempo']}"]
{extra}""")
    p = start(["run", "traces", "-c", stack], name=name)
    t = Traces(p, ports)
    wait_for(lambda: requests.get(t.tempo + "/ready", timeout=1).status_code == 200, what="traces ready")
    return t


def hexid(n, width=32):
    return format(n, f"0{width}x")


def otlp_span(tid, sid, name, start_ns, dur_ns, parent=None, kind=2, attrs=None, status=None, events=None):
    s = {"traceId": tid, "spanId": sid, "name": name, "kind": kind,
         "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(start_ns + dur_ns),
         "attributes": [{"key": k, "value": v} for k, v in (attrs or {}).items()]}
    if parent:
        s["parentSpanId"] = parent
    if status:
        s["status"] = status
    if events:
        s["events"] = events
    return s


def otlp_req(service, spans, res_attrs=None):
    attrs = [{"key": "service.name", "value": {"stringValue": service}}]
    attrs += [{"key": k, "value": v} for k, v in (res_attrs or {}).items()]
    return {"resourceSpans": [{"resource": {"attributes": attrs},
                               "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}]}]}


def post_json(t, doc, **kw):
    return requests.post(t.otlp + "/v1/traces", data=json.dumps(doc),
                         headers={"Content-Type": "application/json", **kw.pop("headers", {})}, timeout=10, **kw)


def jaeger_trace(t, tid):
    r = requests.get(f"{t.jaeger}/api/traces/{tid}", timeout=10)
    if r.status_code != 200:
        return None
    return r.json()["data"][0]


def span_ids(trace):
    return sorted(s["spanID"] for s in trace["spans"])


# ---- conformance: Jaeger's storage-integration fixtures ----

def test_jaeger_fixtures(start, tmp_path):
    runner = os.path.join(TRACES, "jaeger_fixtures.py")
    if not os.path.exists(runner):
        pytest.skip("the shared conformance material is not next to this checkout")
    t = start_traces(start, tmp_path)
    r = subprocess.run(["/usr/bin/python3", runner, t.otlp, "--query", t.jaeger, "--timeout", "30"],
                       capture_output=True, text=True, timeout=600)
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    m = re.match(r"(\d+) passed, (\d+) failed", last)
    assert m, r.stdout[-3000:] + r.stderr[-2000:]
    fails = [l for l in r.stdout.splitlines() if l.startswith("FAIL")]
    assert int(m.group(2)) == 0, "\n".join(fails[:30])
    assert int(m.group(1)) == 57


def test_jaeger_fixtures_searched_from_blocks(start, tmp_path):
    """The same runner, its searches answered from a block: once every fixture has
    read back, the store is stopped (which writes the head into a block) and started
    again on the same data before the first search, so each search case is judged
    from the block's search columns."""
    runner = os.path.join(TRACES, "jaeger_fixtures.py")
    if not os.path.exists(runner):
        pytest.skip("the shared conformance material is not next to this checkout")
    spec = importlib.util.spec_from_file_location("jaeger_fixtures", runner)
    jf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(jf)
    ports = {k: free_port() for k in ("listen", "grpc", "zipkin", "jaeger", "tempo")}
    t = start_traces(start, tmp_path, ports=ports)
    state = {"restarted": None}
    search = jf.search

    def search_from_blocks(qurl, params):
        if not state["restarted"]:
            t.p.signal(signal.SIGTERM)
            t.p.wait(10)
            state["restarted"] = start_traces(start, tmp_path, ports=ports, name="cairn2")
            assert metric(state["restarted"], "cairn_traces_head_spans") == 0
        return search(qurl, params)

    jf.search = search_from_blocks
    out = io.StringIO()
    argv = sys.argv
    sys.argv = ["jaeger_fixtures.py", t.otlp, "--query", t.jaeger, "--timeout", "30"]
    try:
        with contextlib.redirect_stdout(out):
            with pytest.raises(SystemExit) as ex:
                jf.main()
    finally:
        sys.argv = argv
    text = out.getvalue()
    assert ex.value.code == 0 and text.strip().splitlines()[-1] == "57 passed, 0 failed", text[-3000:]
    assert state["restarted"] and metric(state["restarted"], "cairn_traces_search_column_rejects_total") > 0


# ---- the OpenTelemetry JS SDK, three exporters ----

def node_send(proto, endpoint, service):
    r = subprocess.run(["node", os.path.join(NODE, "otel_send.js"), proto, endpoint, service],
                       capture_output=True, text=True, timeout=60, cwd=NODE)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["spans"]


def any_value(v):
    """An OTLP JSON AnyValue as a Python value."""
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return v["boolValue"]
    if "arrayValue" in v:
        return [any_value(x) for x in v["arrayValue"].get("values", [])]
    return v


@pytest.mark.parametrize("proto", ["proto", "http", "grpc"])
def test_otel_js_sdk_read_back_everywhere(start, tmp_path, proto):
    """What the SDK sent comes back field by field through Tempo's OTLP JSON, Jaeger's
    model and Zipkin's: ids, parent, kind, times, attributes, events, links, status,
    resource."""
    t = start_traces(start, tmp_path)
    sent = node_send(proto, t.grpc if proto == "grpc" else t.otlp, f"shop-{proto}")
    tid = sent[0]["traceId"]
    doc = wait_for(lambda: (r := requests.get(f"{t.tempo}/api/traces/{tid}", timeout=5)).status_code == 200 and r.json(),
                   what="the trace in Tempo's API")
    [batch] = doc["batches"]
    res = {a["key"]: any_value(a["value"]) for a in batch["resource"]["attributes"]}
    assert res == {"service.name": f"shop-{proto}", "deployment.environment": "test", "host.cpus": 2}
    [ss] = batch["scopeSpans"]
    assert ss["scope"]["name"] == "cairn-test" and ss["scope"]["version"] == "1.2.3"
    got = {s["spanId"]: s for s in ss["spans"]}
    assert set(got) == {s["spanId"] for s in sent}
    for s in sent:
        g = got[s["spanId"]]
        assert g["traceId"] == tid
        assert g.get("parentSpanId") == s["parentSpanId"]
        assert g["name"] == s["name"]
        assert g["kind"] == s["kind"] + 1          # the JS API's enum starts at INTERNAL=0
        assert g["startTimeUnixNano"] == s["startNs"] and g["endTimeUnixNano"] == s["endNs"]
        assert {a["key"]: any_value(a["value"]) for a in g["attributes"]} == s["attributes"]
        assert [(e["name"], e["timeUnixNano"], {a["key"]: any_value(a["value"]) for a in e["attributes"]})
                for e in g.get("events", [])] == \
               [(e["name"], e["timeNs"], e["attributes"]) for e in s["events"]]
        assert [(l["traceId"], l["spanId"], {a["key"]: any_value(a["value"]) for a in l["attributes"]})
                for l in g.get("links", [])] == \
               [(l["traceId"], l["spanId"], l["attributes"]) for l in s["links"]]
        assert g["status"].get("code", 0) == s["status"]["code"]
        assert g["status"].get("message", "") == s["status"].get("message", "")
    # Jaeger's model
    jt = jaeger_trace(t, tid)
    root, child = sent
    js = {s["spanID"]: s for s in jt["spans"]}
    jr = js[root["spanId"]]
    assert jr["operationName"] == "GET /checkout"
    assert jr["startTime"] == int(root["startNs"]) // 1000
    assert jr["duration"] == (int(root["endNs"]) - int(root["startNs"])) // 1000
    tags = {x["key"]: x["value"] for x in jr["tags"]}
    assert tags["http.status_code"] == 500 and tags["ratio"] == 0.25 and tags["cached"] is False
    assert tags["span.kind"] == "server" and tags["error"] is True
    assert tags["otel.status_code"] == "ERROR" and tags["otel.status_description"] == "payment failed"
    assert jr["references"] == [{"refType": "FOLLOWS_FROM", "traceID": "0af7651916cd43dd8448eb211c80319c",
                                 "spanID": "b7ad6b7169203331"}]
    assert jr["logs"][0]["fields"][0] == {"key": "event", "type": "string", "value": "cart loaded"}
    jc = js[child["spanId"]]
    assert jc["references"] == [{"refType": "CHILD_OF", "traceID": tid, "spanID": root["spanId"]}]
    assert jt["processes"][jr["processID"]]["serviceName"] == f"shop-{proto}"
    # Zipkin's
    zs = {s["id"]: s for s in requests.get(f"{t.zipkin}/api/v2/trace/{tid}", timeout=5).json()}
    assert zs[child["spanId"]]["parentId"] == root["spanId"] and zs[child["spanId"]]["kind"] == "CLIENT"
    assert zs[root["spanId"]]["tags"]["http.method"] == "GET" and zs[root["spanId"]]["tags"]["error"] == "payment failed"
    # Tempo's protobuf answer is the TracesData bytes
    r = requests.get(f"{t.tempo}/api/traces/{tid}", headers={"Accept": "application/protobuf"}, timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/protobuf"
    assert bytes.fromhex(tid) in r.content and bytes.fromhex(child["spanId"]) in r.content


# ---- Zipkin in, with py_zipkin ----

def test_py_zipkin_spans_read_back(start, tmp_path):
    from py_zipkin import Encoding
    from py_zipkin.transport import BaseTransportHandler
    from py_zipkin.zipkin import zipkin_span

    t = start_traces(start, tmp_path)
    sent = []

    class Http(BaseTransportHandler):
        def get_max_payload_bytes(self):
            return None

        def send(self, payload):
            sent.append(json.loads(payload))
            r = requests.post(t.zipkin + "/api/v2/spans", data=payload,
                              headers={"Content-Type": "application/json"}, timeout=5)
            assert r.status_code == 202, r.text

    with zipkin_span(service_name="Billing", span_name="charge card", transport_handler=Http(),
                     sample_rate=100.0, encoding=Encoding.V2_JSON, binary_annotations={"amount": "12"}) as root:
        with zipkin_span(service_name="Billing", span_name="call bank", annotations={"charged": time.time()}) as child:
            child.update_binary_annotations({"bank": "acme"})
        root.update_binary_annotations({"outcome": "ok"})
    spans = [s for batch in sent for s in batch]
    tid = spans[0]["traceId"]
    got = wait_for(lambda: (r := requests.get(f"{t.zipkin}/api/v2/trace/{tid}", timeout=5)).status_code == 200 and r.json(),
                   what="the Zipkin trace")
    byid = {s["id"]: s for s in got}
    assert set(byid) == {s["id"] for s in spans}
    for s in spans:
        g = byid[s["id"]]
        assert g.get("parentId") == s.get("parentId")
        assert g["name"] == s["name"].lower() and g["localEndpoint"]["serviceName"] == "billing"
        assert g["timestamp"] == s["timestamp"] and g["duration"] == s["duration"]
        for k, v in s.get("tags", {}).items():
            assert g["tags"][k] == v
        assert [a["value"] for a in g.get("annotations", [])] == [a["value"] for a in s.get("annotations", [])]
    assert requests.get(t.zipkin + "/api/v2/services", timeout=5).json() == ["billing"]
    assert sorted(requests.get(t.zipkin + "/api/v2/spans", params={"serviceName": "billing"}, timeout=5).json()) == \
        ["call bank", "charge card"]
    found = requests.get(t.zipkin + "/api/v2/traces", params={"serviceName": "billing", "annotationQuery": "bank=acme"},
                         timeout=5).json()
    assert [tr[0]["traceId"] for tr in found] == [tid]
    # the same trace through Jaeger's API (the OTLP mapping of Zipkin spans)
    jt = jaeger_trace(t, tid.rjust(32, "0"))
    assert sorted(s["operationName"] for s in jt["spans"]) == ["call bank", "charge card"]


# ---- durability: kill -9 loses no acknowledged span, before or after blocks ----

def test_kill9_keeps_every_acknowledged_span(start, tmp_path):
    ports = {k: free_port() for k in ("listen", "grpc", "zipkin", "jaeger", "tempo")}
    extra = "    trace_idle_period: 1s\n    max_block_duration: 1s\n"
    t = start_traces(start, tmp_path, extra=extra, ports=ports)
    now = time.time_ns()
    acked = []
    for i in range(60):
        tid = hexid(0xabc000 + i)
        r = post_json(t, otlp_req("durable", [otlp_span(tid, hexid(i + 1, 16), f"op{i % 3}", now + i, 1000)]))
        assert r.status_code == 200, r.text
        acked.append(tid)
        if i == 29:     # half of them go into a block before the kill
            wait_for(lambda: any(f.endswith(".ctb") for f in os.listdir(tmp_path / "data" / "traces" / "blocks")),
                     timeout=20, what="a block on disk")
    t.p.signal(signal.SIGKILL)
    t.p.wait(5)
    t2 = start_traces(start, tmp_path, extra=extra, ports=ports, name="cairn2")
    for tid in acked:
        tr = jaeger_trace(t2, tid)
        assert tr and len(tr["spans"]) == 1, tid
    assert "WAL replayed" in t2.p.stderr()
    svc = requests.get(t2.jaeger + "/api/services", timeout=5).json()["data"]
    assert "durable" in svc


def test_blocks_compaction_and_retention(start, tmp_path):
    """Complete traces go into blocks; eight blocks merge into one, with the parts of
    a trace that arrived in different blocks joined; blocks past retention go."""
    ports = {k: free_port() for k in ("listen", "grpc", "zipkin", "jaeger", "tempo")}
    extra = "    trace_idle_period: 1s\n    max_block_duration: 1s\n    retention: 2h\n"
    t = start_traces(start, tmp_path, extra=extra, ports=ports)
    blocks = tmp_path / "data" / "traces" / "blocks"
    now = time.time_ns()
    shared = hexid(0x5ca1ab1e)
    for b in range(8):
        spans = [otlp_span(hexid(0x1000 + b * 10 + i), hexid(1, 16), "work", now, 5000) for i in range(5)]
        spans.append(otlp_span(shared, hexid(100 + b, 16), f"part{b}", now + b, 5000))
        assert post_json(t, otlp_req("blocky", spans)).status_code == 200
        want = b + 1
        wait_for(lambda: requests.get(t.otlp + "/metrics", timeout=5).text.count("") and
                 float(re.search(r"^cairn_traces_flushes_total (\S+)", requests.get(t.otlp + "/metrics", timeout=5).text,
                                 re.M).group(1)) >= want, timeout=30, what=f"block {want}")
    wait_for(lambda: float(re.search(r"^cairn_traces_compactions_total (\S+)",
                                     requests.get(t.otlp + "/metrics", timeout=5).text, re.M).group(1)) >= 1,
             timeout=30, what="a compaction")
    files = [f for f in os.listdir(blocks) if f.endswith(".ctb")]
    assert len(files) == 1, files
    tr = jaeger_trace(t, shared)
    assert sorted(s["operationName"] for s in tr["spans"]) == [f"part{b}" for b in range(8)]
    for b in range(8):
        assert jaeger_trace(t, hexid(0x1000 + b * 10 + 4))
    # spans that ended three hours ago are past the 2h retention once in a block
    old = now - 3 * 3600 * 10**9
    assert post_json(t, otlp_req("old", [otlp_span(hexid(0x01d), hexid(1, 16), "old", old, 1000)])).status_code == 200
    wait_for(lambda: jaeger_trace(t, hexid(0x01d)) is None, timeout=30, what="the old trace dropped by retention")
    assert jaeger_trace(t, shared)
    assert "past retention" in t.p.stderr()


# ---- limits and bad input ----

def test_bad_input_and_partial_success(start, tmp_path):
    t = start_traces(start, tmp_path)
    now = time.time_ns()
    # malformed bodies: a clear 400, nothing stored
    r = requests.post(t.otlp + "/v1/traces", data="{not json", headers={"Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 400 and "invalid JSON" in r.text
    r = post_json(t, [])
    assert r.status_code == 400 and "expected an ExportTraceServiceRequest" in r.text
    r = post_json(t, {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]})
    assert r.status_code == 400 and "traceId" in r.text
    r = requests.post(t.otlp + "/v1/traces", data=b"\xff\xff\xff", timeout=5,
                      headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 400 and "malformed" in r.text
    r = requests.post(t.otlp + "/v1/traces", data=b"{}", timeout=5, headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = requests.get(t.otlp + "/v1/traces", timeout=5)
    assert r.status_code == 405
    # a span without a valid id is rejected alone: partial_success counts it
    good = otlp_span(hexid(0xbeef), hexid(2, 16), "good", now, 1000)
    bad = otlp_span(hexid(0), hexid(3, 16), "bad", now, 1000)
    r = post_json(t, otlp_req("partial", [good, bad]))
    assert r.status_code == 200
    ps = r.json()["partialSuccess"]
    assert ps["rejectedSpans"] == "1" and "trace id" in ps["errorMessage"]
    assert jaeger_trace(t, hexid(0xbeef))
    # gzip bodies
    body = gzip.compress(json.dumps(otlp_req("gz", [otlp_span(hexid(0x92), hexid(4, 16), "gz", now, 1000)])).encode())
    r = requests.post(t.otlp + "/v1/traces", data=body, timeout=5,
                      headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json() == {}
    assert jaeger_trace(t, hexid(0x92))
    # the default max_attribute_bytes (2048) cuts long values, keeps the span
    long = "x" * 5000
    post_json(t, otlp_req("big", [otlp_span(hexid(0x77), hexid(5, 16), "big", now, 1000,
                                            attrs={"sql": {"stringValue": long}})]))
    tags = {x["key"]: x["value"] for x in jaeger_trace(t, hexid(0x77))["spans"][0]["tags"]}
    assert tags["sql"] == "x" * 2048
    # Zipkin: not a list
    r = requests.post(t.zipkin + "/api/v2/spans", data="{}", headers={"Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 400 and "list of Zipkin v2 spans" in r.text
    # Jaeger: the service is required; a bad duration is refused
    r = requests.get(t.jaeger + "/api/traces", timeout=5)
    assert r.status_code == 400 and "service" in r.json()["errors"][0]["msg"]
    r = requests.get(t.jaeger + "/api/traces", params={"service": "gz", "minDuration": "soon"}, timeout=5)
    assert r.status_code == 400
    # TraceQL errors name the place
    r = requests.get(t.tempo + "/api/search", params={"q": "{ span.x = }"}, timeout=5)
    assert r.status_code == 400 and "parse error" in r.text


def test_rate_and_trace_size_limits(start, tmp_path):
    extra = ("    limits:\n      ingestion_rate_limit_bytes: 2KB\n      ingestion_burst_size_bytes: 4KB\n"
             "      max_bytes_per_trace: 1KB\n")
    t = start_traces(start, tmp_path, extra=extra)
    now = time.time_ns()
    # a trace past max_bytes_per_trace: its spans are refused, the others kept
    big = [otlp_span(hexid(0x51), hexid(i + 1, 16), "n" * 100, now, 1000) for i in range(12)]
    small = otlp_span(hexid(0x52), hexid(1, 16), "small", now, 1000)
    r = post_json(t, otlp_req("sized", big + [small]))
    assert r.status_code == 200, r.text
    ps = r.json()["partialSuccess"]
    assert int(ps["rejectedSpans"]) == 12 and "TRACE_TOO_LARGE" in ps["errorMessage"]
    assert jaeger_trace(t, hexid(0x52)) and jaeger_trace(t, hexid(0x51)) is None
    # past the burst: 429 with Retry-After, the whole export refused
    statuses = []
    for i in range(50):     # about 0.8 KB each against a 4 KB burst refilled at 2 KB/s
        r = post_json(t, otlp_req("rated", [otlp_span(hexid(0x600 + i), hexid(1, 16), "x" * 700, now, 1000)]))
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert r.headers["Retry-After"] == "1" and "RATE_LIMITED" in r.text
            break
    assert 429 in statuses and statuses[0] == 200


# ---- search: Jaeger, Tempo (tags and TraceQL), tag names and values ----

def shop_trace(tid, now, error=False, slow=False):
    """frontend (server) -> frontend (client) -> cart (server) -> db (client)"""
    base = int(tid[-4:], 16) * 1000
    f = hexid(base + 1, 16)
    fc = hexid(base + 2, 16)
    c = hexid(base + 3, 16)
    d = hexid(base + 4, 16)
    dur = 900_000_000 if slow else 2_000_000
    return [
        otlp_req("frontend", [otlp_span(tid, f, "GET /cart", now, dur, kind=2,
                                        attrs={"http.status_code": {"intValue": "500" if error else "200"}}),
                              otlp_span(tid, fc, "call cart", now + 10, dur - 20, parent=f, kind=3)]),
        otlp_req("cart", [otlp_span(tid, c, "load", now + 20, dur - 40, parent=fc, kind=2,
                                    status={"code": 2, "message": "boom"} if error else None),
                          otlp_span(tid, d, "SELECT", now + 30, dur - 60, parent=c, kind=3,
                                    attrs={"db.system": {"stringValue": "postgresql"}})],
                 res_attrs={"deployment.environment": {"stringValue": "prod"}}),
    ]


def test_search_jaeger_tempo_traceql(start, tmp_path):
    """Every search answers the same from the head and, after a stop writes the
    traces into a block, from the block (its search columns, then its spans)."""
    ports = {k: free_port() for k in ("listen", "grpc", "zipkin", "jaeger", "tempo")}
    t = start_traces(start, tmp_path, ports=ports)
    now = time.time_ns() - 60 * 10**9
    ok, err, slow = hexid(0xa0001), hexid(0xa0002), hexid(0xa0003)
    for tid, kw in ((ok, {}), (err, {"error": True}), (slow, {"slow": True})):
        for req in shop_trace(tid, now, **kw):
            assert post_json(t, req).status_code == 200
    check_searches(t, now, ok, err, slow)
    t.p.signal(signal.SIGTERM)
    t.p.wait(10)
    assert any(f.endswith(".ctb") for f in os.listdir(tmp_path / "data" / "traces" / "blocks"))
    t2 = start_traces(start, tmp_path, ports=ports, name="cairn2")
    assert metric(t2, "cairn_traces_head_spans") == 0
    check_searches(t2, now, ok, err, slow)
    # the block's columns rejected traces whose spans were never read
    assert metric(t2, "cairn_traces_search_column_rejects_total") > 0


def metric(t, name):
    m = re.search(rf"^{name} (\S+)", requests.get(t.otlp + "/metrics", timeout=5).text, re.M)
    assert m, name
    return float(m.group(1))


def check_searches(t, now, ok, err, slow):
    # Jaeger
    assert requests.get(t.jaeger + "/api/services", timeout=5).json()["data"] == ["cart", "frontend"]
    assert requests.get(t.jaeger + "/api/services/cart/operations", timeout=5).json()["data"] == ["SELECT", "load"]
    ops = requests.get(t.jaeger + "/api/operations", params={"service": "cart", "spanKind": "client"}, timeout=5).json()
    assert ops["data"] == [{"name": "SELECT", "spanKind": "client"}]

    def jaeger_ids(**params):
        r = requests.get(t.jaeger + "/api/traces", params=params, timeout=10)
        assert r.status_code == 200, r.text
        return sorted(tr["traceID"] for tr in r.json()["data"])

    assert jaeger_ids(service="cart", tags=json.dumps({"error": "true"})) == [err]
    assert jaeger_ids(service="frontend", tags=json.dumps({"http.status_code": 200})) == sorted([ok, slow])
    assert jaeger_ids(service="cart", minDuration="500ms") == [slow]
    assert jaeger_ids(service="cart", operation="SELECT", tags=json.dumps({"deployment.environment": "prod"})) == \
        sorted([ok, err, slow])
    assert jaeger_ids(service="cart", lookback="1h", limit=1) in ([ok], [err], [slow])
    # api_v3
    r = requests.get(f"{t.jaeger}/api/v3/traces/{err}", timeout=5)
    assert r.status_code == 200 and len(r.json()["result"]["resourceSpans"]) == 2

    def tempo_ids(**params):
        params.setdefault("start", str(now // 10**9 - 60))
        params.setdefault("end", str(now // 10**9 + 60))
        r = requests.get(t.tempo + "/api/search", params=params, timeout=10)
        assert r.status_code == 200, r.text
        return sorted(tr["traceID"] for tr in r.json()["traces"])

    assert tempo_ids(tags="service.name=frontend http.status_code=500") == [err]
    assert tempo_ids(tags="service.name=cart http.status_code=500") == []    # one span must hold both
    assert tempo_ids(tags="name=load") == sorted([ok, err, slow])
    assert tempo_ids(q='{ status = error }') == [err]
    assert tempo_ids(q='{ resource.service.name = "cart" && duration > 500ms }') == [slow]
    assert tempo_ids(q='{ span.db.system = "postgresql" } && { .http.status_code >= 500 }') == [err]
    assert tempo_ids(q='{ resource.service.name = "frontend" } >> { status = error }') == [err]
    assert tempo_ids(q='{ name = "call cart" } > { name = "load" }') == sorted([ok, err, slow])
    assert tempo_ids(q='{ name = "load" } < { name = "call cart" }') == sorted([ok, err, slow])
    assert tempo_ids(q='{ name = "GET /cart" } > { name = "SELECT" }') == []
    assert tempo_ids(q='{ kind = client } ~ { kind = client }') == []
    assert tempo_ids(q='{ name =~ "GET.*" && rootServiceName = "frontend" } | count() = 1') == sorted([ok, err, slow])
    assert tempo_ids(q='{ } | count() > 3') == sorted([ok, err, slow])
    assert tempo_ids(q='{ } | count() > 4') == []
    assert tempo_ids(q='{ traceDuration > 500ms }') == [slow]
    assert tempo_ids(q='{ resource.deployment.environment = "prod" } | avg(duration) > 100ms') == [slow]
    r = requests.get(t.tempo + "/api/search", timeout=10, params={
        "q": '{ resource.service.name = "cart" } | by(span.db.system) | select(span.db.system)',
        "start": str(now // 10**9 - 60), "end": str(now // 10**9 + 60)})
    tr = [x for x in r.json()["traces"] if x["traceID"] == ok][0]
    assert tr["rootServiceName"] == "frontend" and tr["rootTraceName"] == "GET /cart"
    assert len(tr["spanSets"]) == 2          # db.system postgresql, and nil
    tags = requests.get(t.tempo + "/api/v2/search/tags", timeout=5).json()
    scopes = {s["name"]: s["tags"] for s in tags["scopes"]}
    assert "db.system" in scopes["span"] and "deployment.environment" in scopes["resource"]
    vals = requests.get(t.tempo + "/api/v2/search/tag/resource.service.name/values", timeout=5).json()
    assert {v["value"] for v in vals["tagValues"]} == {"cart", "frontend"}
    assert requests.get(t.tempo + "/api/search/tag/name/values", timeout=5).json()["tagValues"] == \
        ["GET /cart", "SELECT", "call cart", "load"]
    assert requests.get(t.tempo + "/api/echo", timeout=5).text.strip() == "echo"


def test_blocks_of_the_first_format_still_read(start, tmp_path):
    """A block written before the search columns (CTB1, by the traces role of
    2026-12-02: three traces of service "legacy", one an error, written 2025-12-02)
    is read and searched as before, and compaction's rewrite is not needed for it."""
    blocks = tmp_path / "data" / "traces" / "blocks"
    os.makedirs(blocks)
    shutil.copy(os.path.join(ROOT, "tests", "integration", "data", "traces-ctb1", "00000001.ctb"), blocks)
    t = start_traces(start, tmp_path, extra="    retention: 0\n")  # the fixture is a year old
    ids = [hexid(0xc7b1000 + i) for i in range(3)]
    for tid in ids:
        tr = jaeger_trace(t, tid)
        assert tr and sorted(s["operationName"] for s in tr["spans"]) == ["GET /old", "SELECT old"], tid
    when = {"start": "1764699000", "end": "1764701000"}
    r = requests.get(t.tempo + "/api/search", params={"q": "{ status = error }", **when}, timeout=10)
    assert r.status_code == 200 and [x["traceID"] for x in r.json()["traces"]] == [ids[1]]
    r = requests.get(t.jaeger + "/api/traces", timeout=10, params={
        "service": "legacy", "tags": json.dumps({"http.status_code": "500"}),
        "start": "1764699000000000", "end": "1764701000000000"})
    assert [x["traceID"] for x in r.json()["data"]] == [ids[1]]
    assert requests.get(t.jaeger + "/api/services", timeout=5).json()["data"] == ["legacy"]
    # read row by row: a CTB1 block has no columns to reject a trace from
    assert metric(t, "cairn_traces_search_column_rejects_total") == 0


def test_span_metrics_and_service_graph(start, tmp_path):
    t = start_traces(start, tmp_path)
    now = time.time_ns() - 10 * 10**9
    for i in range(3):
        reqs = shop_trace(hexid(0xb0000 + i), now, error=(i == 0))
        # exporters send a service's spans as they end: the server's (cart) often come
        # before its caller's client span; both orders make the same edge
        for req in (reqs[::-1] if i % 2 else reqs):
            assert post_json(t, req).status_code == 200
    m = requests.get(t.tempo + "/metrics", timeout=5).text
    assert re.search(r'^traces_spanmetrics_calls_total\{service="cart",span_name="load",span_kind="SPAN_KIND_SERVER",'
                     r'status_code="STATUS_CODE_ERROR"\} 1$', m, re.M), m[:3000]
    assert re.search(r'^traces_service_graph_request_total\{client="frontend",server="cart"\} 3$', m, re.M)
    assert re.search(r'^traces_service_graph_request_failed_total\{client="frontend",server="cart"\} 1$', m, re.M)
    deps = requests.get(t.jaeger + "/api/dependencies", params={"endTs": str(time.time_ns() // 10**6),
                                                                  "lookback": "3600000"}, timeout=5).json()["data"]
    assert [(d["parent"], d["child"], d["callCount"]) for d in deps] == [("frontend", "cart", 3)]
    z = requests.get(t.zipkin + "/api/v2/dependencies", params={"endTs": str(time.time_ns() // 10**6)}, timeout=5).json()
    assert z == [{"parent": "frontend", "child": "cart", "callCount": 3, "errorCount": 1}]
    assert requests.get(t.zipkin + "/api/v2/remoteServices", params={"serviceName": "frontend"}, timeout=5).json() == \
        ["cart"]
    assert requests.get(t.zipkin + "/api/v2/remoteServices", params={"serviceName": "cart"}, timeout=5).json() == []


def test_tenants_are_apart(start, tmp_path):
    t = start_traces(start, tmp_path)
    now = time.time_ns()
    tid = hexid(0x7e4a)
    assert post_json(t, otlp_req("a-svc", [otlp_span(tid, hexid(1, 16), "x", now, 10)]),
                     headers={"X-Scope-OrgID": "team-a"}).status_code == 200
    assert requests.get(f"{t.tempo}/api/traces/{tid}", headers={"X-Scope-OrgID": "team-a"}, timeout=5).status_code == 200
    assert requests.get(f"{t.tempo}/api/traces/{tid}", headers={"X-Scope-OrgID": "team-b"}, timeout=5).status_code == 404
    assert requests.get(f"{t.tempo}/api/traces/{tid}", timeout=5).status_code == 404


# ---- the stack traces itself ----

def jaeger_spans(jp, tid):
    """A trace read through Jaeger's API as (service, tags, span) triples; None until it is there."""
    r = requests.get(f"http://127.0.0.1:{jp}/api/traces/{tid}", timeout=5)
    if r.status_code != 200:
        return None
    t = r.json()["data"][0]
    procs = {k: v["serviceName"] for k, v in t["processes"].items()}
    return [(procs[s["processID"]], {x["key"]: x["value"] for x in s["tags"]}, s) for s in t["spans"]]


def test_edge_and_demo_app_trace_themselves(start, tmp_path):
    """A request with a traceparent through an edge to a demo app is one trace: the
    edge's server span (child of the caller's), its client span, the app's server
    span (child of the client span); the access line carries the trace id. With
    sampling 0 and no parent, nothing is exported but the context still flows."""
    tp, gp, jp, app, lb, lb0, app0 = (free_port() for _ in range(7))
    stack = write_stack(tmp_path, f"""
data_dir: data
services:
  traces:
    role: traces
    listen: ["127.0.0.1:{tp}"]
    grpc: ["127.0.0.1:{gp}"]
    jaeger: ["127.0.0.1:{jp}"]
  app:
    role: demo-app
    listen: ["127.0.0.1:{app}"]
  lb:
    role: edge
    listen: [{{address: "127.0.0.1:{lb}"}}]
    routes: [{{path: /, backend: app}}]
    backends: {{app: {{servers: ["127.0.0.1:{app}"]}}}}
  app0:
    role: demo-app
    listen: ["127.0.0.1:{app0}"]
    tracing: {{sampling: 0}}
  lb0:
    role: edge
    listen: [{{address: "127.0.0.1:{lb0}"}}]
    routes: [{{path: /, backend: app}}]
    backends: {{app: {{servers: ["127.0.0.1:{app0}"]}}}}
    tracing: {{sampling: 0}}
""")
    up = start(["up", "-c", stack])
    wait_for(lambda: requests.get(f"http://127.0.0.1:{lb}/api/hello", timeout=1).status_code == 200, timeout=20,
             what="the stack")
    caller_tid, caller_sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    r = requests.get(f"http://127.0.0.1:{lb}/api/hello", timeout=5,
                     headers={"traceparent": f"00-{caller_tid}-{caller_sid}-01"})
    assert r.status_code == 200 and r.json()["trace_id"] == caller_tid

    spans = wait_for(lambda: (lambda sp: sp and len(sp) >= 3 and sp)(jaeger_spans(jp, caller_tid)), timeout=20,
                     what="the trace of the request")
    spans = [(svc, tags["span.kind"], s) for svc, tags, s in spans]
    assert sorted((svc, kind) for svc, kind, _ in spans) == [("app", "server"), ("lb", "client"), ("lb", "server")]
    by = {(svc, kind): s for svc, kind, s in spans}
    parent = lambda s: [x["spanID"] for x in s["references"] if x["refType"] == "CHILD_OF"]
    assert parent(by[("lb", "server")]) == [caller_sid]
    assert parent(by[("lb", "client")]) == [by[("lb", "server")]["spanID"]]
    assert parent(by[("app", "server")]) == [by[("lb", "client")]["spanID"]]
    tags = {x["key"]: x["value"] for x in by[("lb", "server")]["tags"]}
    assert tags["http.response.status_code"] == 200 and tags["cairn.backend"] == "app"
    # the access line of that request names the trace
    wait_for(lambda: f"trace_id={caller_tid}" in open(tmp_path / "data" / "log" / "lb.log").read(), timeout=10,
             what="the access line")
    # sampling 0: the context flows (the app sees the edge's trace id) but no span is kept
    r = requests.get(f"http://127.0.0.1:{lb0}/api/hello", timeout=5)
    tid0 = r.json()["trace_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", tid0)
    m = requests.get(f"http://127.0.0.1:{app0}/metrics", timeout=5).text
    assert re.search(r"^cairn_otlp_spans_exported_total 0$", m, re.M) and \
        re.search(r"^cairn_otlp_spans_dropped_total 0$", m, re.M)     # never queued, not sent late
    assert requests.get(f"http://127.0.0.1:{jp}/api/traces/{tid0}", timeout=5).status_code == 404
    m = requests.get(f"http://127.0.0.1:{app}/metrics", timeout=5).text
    assert float(re.search(r"^cairn_otlp_spans_exported_total (\S+)$", m, re.M).group(1)) >= 1


def test_edge_exports_a_client_span_per_attempt(start, tmp_path):
    """A request the edge retries on a second server has one client span per
    attempt: the refused connection (its reason, error set) and the answered one;
    the app's span hangs under the attempt that reached it."""
    tp, jp, app, lb, dead = (free_port() for _ in range(5))
    stack = write_stack(tmp_path, f"""
data_dir: data
services:
  traces:
    role: traces
    listen: ["127.0.0.1:{tp}"]
    jaeger: ["127.0.0.1:{jp}"]
  app:
    role: demo-app
    listen: ["127.0.0.1:{app}"]
  lb:
    role: edge
    listen: [{{address: "127.0.0.1:{lb}"}}]
    routes: [{{path: /, backend: app}}]
    backends: {{app: {{servers: ["127.0.0.1:{dead}", "127.0.0.1:{app}"]}}}}
""")
    start(["up", "-c", stack])
    wait_for(lambda: requests.get(f"http://127.0.0.1:{lb}/api/hello", timeout=1).status_code == 200, timeout=20,
             what="the stack")

    spans_of = lambda tid: jaeger_spans(jp, tid)
    # round robin over a refused port and the app: one of the first requests tries both
    retried = None
    for i in range(6):
        tid = "%032x" % (0xabc0 + i)
        r = requests.get(f"http://127.0.0.1:{lb}/api/hello", timeout=5,
                         headers={"traceparent": f"00-{tid}-00f067aa0ba902b7-01"})
        assert r.status_code == 200
        got = wait_for(lambda: (lambda sp: sp if sp and any(svc == "app" for svc, _, _ in sp) and
                                len([1 for svc, _, _ in sp if svc == "lb"]) >= 2 else None)(spans_of(tid)),
                       timeout=20, what="the trace of the request")
        server = [tags for svc, tags, _ in got if svc == "lb" and tags["span.kind"] == "server"][0]
        if server["cairn.attempts"] == 2:
            retried = got
            break
    assert retried, "no request was retried on the second server"
    wait_for(lambda: len([1 for svc, tags, _ in spans_of(tid) if tags["span.kind"] == "client"]) == 2,
             timeout=10, what="both client spans")
    spans = spans_of(tid)
    server = [s for svc, tags, s in spans if svc == "lb" and tags["span.kind"] == "server"][0]
    clients = sorted(((tags, s) for svc, tags, s in spans if tags["span.kind"] == "client"),
                     key=lambda x: x[0]["cairn.attempt"])
    first, second = clients[0][0], clients[1][0]
    assert first["cairn.attempt"] == 1 and first["server.address"] == f"127.0.0.1:{dead}"
    assert first["error.type"] == "cannot connect to the server" and first["error"] is True
    assert "http.response.status_code" not in first
    assert second["cairn.attempt"] == 2 and second["server.address"] == f"127.0.0.1:{app}"
    assert second["http.response.status_code"] == 200 and "error.type" not in second
    parent = lambda s: [x["spanID"] for x in s["references"] if x["refType"] == "CHILD_OF"]
    assert parent(clients[0][1]) == parent(clients[1][1]) == [server["spanID"]]
    app_span = [s for svc, tags, s in spans if svc == "app"][0]
    assert parent(app_span) == [clients[1][1]["spanID"]]


def test_span_metrics_exemplars_reach_query_exemplars(start, tmp_path):
    """The span-metrics latency histogram carries the trace of its last span as a
    bucket exemplar (OpenMetrics, when the scraper asks for it); cairn's metrics role
    and Prometheus 2.42 (exemplar storage on) both scrape it, and both answer
    /api/v1/query_exemplars with that trace id, so Grafana links a latency graph to
    the trace."""
    tp, tempo, mp, pport = (free_port() for _ in range(4))
    stack = write_stack(tmp_path, f"""
data_dir: data
services:
  traces:
    role: traces
    listen: ["127.0.0.1:{tp}"]
    tempo: ["127.0.0.1:{tempo}"]
  metrics:
    role: metrics
    listen: ["127.0.0.1:{mp}"]
    prometheus:
      global: {{scrape_interval: 500ms, scrape_timeout: 400ms}}
      scrape_configs: [{{job_name: traces, static_configs: [{{targets: ["127.0.0.1:{tempo}"]}}]}}]
""")
    start(["up", "-c", stack])
    wait_for(lambda: requests.get(f"http://127.0.0.1:{mp}/-/ready", timeout=1).ok and
             requests.get(f"http://127.0.0.1:{tempo}/ready", timeout=1).ok, timeout=20, what="the stack")
    tid, now = "5a1f" * 8, time.time_ns()
    doc = otlp_req("shop", [otlp_span(tid, "00f067aa0ba902b7", "GET /cart", now, 30_000_000)])
    r = requests.post(f"http://127.0.0.1:{tp}/v1/traces", data=json.dumps(doc),
                      headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 200
    # the text format has no exemplars; OpenMetrics puts it on the 0.05 bucket
    plain = requests.get(f"http://127.0.0.1:{tempo}/metrics", timeout=5)
    assert "# {" not in plain.text and plain.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    om = requests.get(f"http://127.0.0.1:{tempo}/metrics", timeout=5,
                      headers={"Accept": "application/openmetrics-text;version=1.0.0"})
    assert om.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert om.text.endswith("# EOF\n") and "# TYPE traces_spanmetrics_calls counter" in om.text
    line = [x for x in om.text.splitlines() if 'service="shop"' in x and 'le="0.05"' in x][0]
    assert re.search(r' 1 # \{trace_id="%s"\} 0\.03 \d+\.\d{3}$' % tid, line), line
    (tmp_path / "prom.yml").write_text(f"""global: {{scrape_interval: 500ms, scrape_timeout: 400ms}}
scrape_configs: [{{job_name: traces, static_configs: [{{targets: ["127.0.0.1:{tempo}"]}}]}}]
""")
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path}/prom.yml",
                             f"--storage.tsdb.path={tmp_path}/prom-data", "--enable-feature=exemplar-storage",
                             f"--web.listen-address=127.0.0.1:{pport}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prom.log", "wb"))
    try:
        q = {"query": 'traces_spanmetrics_latency_bucket{service="shop"}',
             "start": now / 1e9 - 60, "end": time.time() + 60}

        def exemplars(port):
            r = requests.get(f"http://127.0.0.1:{port}/api/v1/query_exemplars", params=q, timeout=5)
            return r.ok and r.json()["data"] or None
        for port in (mp, pport):
            data = wait_for(lambda: exemplars(port), timeout=30, what=f"exemplars on {port}")
            assert len(data) == 1, data
            assert data[0]["seriesLabels"]["le"] == "0.05" and data[0]["seriesLabels"]["job"] == "traces"
            ex = data[0]["exemplars"]
            assert len(ex) == 1, ex         # scraped again and again, kept once
            assert ex[0]["labels"] == {"trace_id": tid} and float(ex[0]["value"]) == 0.03
        # a selector that matches nothing: no exemplars; a bad query: 400
        r = requests.get(f"http://127.0.0.1:{mp}/api/v1/query_exemplars",
                         params={**q, "query": 'traces_spanmetrics_latency_bucket{service="none"}'}, timeout=5)
        assert r.json() == {"status": "success", "data": []}
        r = requests.get(f"http://127.0.0.1:{mp}/api/v1/query_exemplars", params={**q, "query": "sum("}, timeout=5)
        assert r.status_code == 400
    finally:
        prom.send_signal(signal.SIGTERM)
        prom.wait(10)


def test_a_full_disk_refuses_exports_clearly_and_loses_nothing(start, tmp_path):
    """The data directory on a 4 MB tmpfs, filled up: an export that does not fit in
    the WAL is answered 503 with Retry-After (OTLP exporters retry it) and nothing of
    it is stored; a block that cannot be written leaves its traces in memory and the
    WAL; once space is back, blocks are written and everything acknowledged survives a
    restart."""
    data = tmp_path / "data"
    data.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(data)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: " + r.stderr.decode()[:200])
    try:
        ports = {k: free_port() for k in ("listen", "grpc", "zipkin", "jaeger", "tempo")}
        extra = "    trace_idle_period: 1s\n    max_block_duration: 1s\n"
        t = start_traces(start, tmp_path, extra=extra, ports=ports)
        now = time.time_ns()
        acked = []
        for i in range(5):
            tid = hexid(0xd15c00 + i)
            assert post_json(t, otlp_req("disk", [otlp_span(tid, hexid(1, 16), "kept", now, 1000)])).status_code == 200
            acked.append(tid)
        # fill the disk to the last byte, before the first block (1 s idle + 1 s wait)
        ballast = data / "ballast"
        with open(ballast, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        big = [otlp_span(hexid(0xb16000 + i), hexid(1, 16), "refused", now, 1000,
                         attrs={"pad": {"stringValue": "x" * 1500}}) for i in range(40)]
        r = post_json(t, otlp_req("disk", big))
        assert r.status_code == 503, (r.status_code, r.text)
        assert r.headers["Retry-After"] == "5"
        assert "No space left on device" in r.text and "nothing of this export was stored" in r.text
        assert jaeger_trace(t, hexid(0xb16000)) is None
        # the flush of the acknowledged traces fails too: they stay readable
        wait_for(lambda: "cannot write a block" in t.p.stderr(), timeout=20, what="the failed block write")
        assert all(jaeger_trace(t, tid) for tid in acked)
        # space back: blocks are written, exports taken again
        ballast.unlink()
        wait_for(lambda: any(f.endswith(".ctb") for f in os.listdir(data / "traces" / "blocks")), timeout=20,
                 what="a block once there is room")
        tid = hexid(0xaf7e4)
        assert post_json(t, otlp_req("disk", [otlp_span(tid, hexid(1, 16), "after", now, 1000)])).status_code == 200
        acked.append(tid)
        t.p.signal(signal.SIGTERM)
        assert t.p.wait(20) == 0
        t2 = start_traces(start, tmp_path, extra=extra, ports=ports, name="second")
        assert all(jaeger_trace(t2, tid) for tid in acked)
        assert jaeger_trace(t2, hexid(0xb16000)) is None
        t2.p.signal(signal.SIGTERM)
        t2.p.wait(20)
    finally:
        subprocess.run(["umount", "-l", str(data)], capture_output=True)
