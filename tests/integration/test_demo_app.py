"""role demo-app, run alone with `cairn run`: pages, faults, health, metrics."""
import signal
import subprocess
import time

import pytest
import requests

from conftest import free_port, wait_for, write_stack


@pytest.fixture
def app(start, tmp_path):
    port = free_port()
    path = write_stack(tmp_path, f"""\
log: {{level: info, format: json}}
services:
  web: {{role: demo-app, listen: ["127.0.0.1:{port}"], threads: 2, instance: blue}}
""")
    p = start(["run", "web", "-c", path])
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: requests.get(base + "/-/ready", timeout=1).status_code == 200, timeout=10,
             what="demo-app ready")
    return p, base


def test_pages_and_methods(app):
    p, base = app
    r = requests.get(base + "/", timeout=5)
    assert r.status_code == 200 and "blue" in r.text
    assert r.headers["X-Served-By"] == "blue"
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    h = requests.head(base + "/static/style.css", timeout=5)
    assert h.status_code == 200 and h.content == b""
    assert int(h.headers["Content-Length"]) > 0
    assert requests.get(base + "/nope", timeout=5).status_code == 404
    r = requests.post(base + "/api/hello", data="x", timeout=5)
    assert r.status_code == 405 and "GET" in r.headers["Allow"]
    assert requests.get(base + "/-/healthy", timeout=5).status_code == 200
    assert requests.get(base + "/healthz", timeout=5).text == "ok\n"


def test_traceparent_is_continued(app):
    _, base = app
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    r = requests.get(base + "/api/hello", headers={"traceparent": tp}, timeout=5)
    out = r.headers["traceparent"]
    assert out.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-") and out != tp
    assert r.json()["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    r = requests.get(base + "/api/hello", headers={"traceparent": "garbage"}, timeout=5)
    assert len(r.headers["traceparent"]) == 55
    assert r.json()["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736"


def test_fault_injection_by_query(app):
    _, base = app
    t0 = time.monotonic()
    r = requests.get(base + "/api/hello?latency=300ms", timeout=5)
    assert r.status_code == 200 and time.monotonic() - t0 >= 0.3
    r = requests.get(base + "/api/hello?status=503", timeout=5)
    assert r.status_code == 503 and r.json()["error"] == "injected fault"
    assert requests.get(base + "/api/hello?latency=forever", timeout=5).status_code == 400
    assert requests.get(base + "/api/hello?status=99", timeout=5).status_code == 400


def test_fault_injection_by_admin(app):
    _, base = app
    r = requests.post(base + "/-/faults", data="error_rate=1&healthy=false", timeout=5)
    assert r.status_code == 200
    assert r.json() == {"instance": "blue", "latency_ms": 0, "error_rate": 1, "healthy": False}
    assert requests.get(base + "/healthz", timeout=5).status_code == 503
    assert all(requests.get(base + "/api/hello", timeout=5).status_code == 500 for _ in range(5))
    r = requests.post(base + "/-/faults?latency=200ms&error_rate=0", timeout=5)
    assert r.json()["latency_ms"] == 200
    t0 = time.monotonic()
    assert requests.get(base + "/", timeout=5).status_code == 200
    assert time.monotonic() - t0 >= 0.2
    assert requests.post(base + "/-/faults?latency=soon", timeout=5).status_code == 400
    r = requests.post(base + "/-/faults?reset=1", timeout=5)
    assert r.json() == {"instance": "blue", "latency_ms": 0, "error_rate": 0, "healthy": True}
    assert requests.get(base + "/healthz", timeout=5).status_code == 200
    assert requests.get(base + "/-/faults", timeout=5).json()["healthy"] is True


def test_metrics_pass_promtool(app):
    _, base = app
    for _ in range(3):
        requests.get(base + "/api/hello", timeout=5)
    requests.get(base + "/nope", timeout=5)
    text = requests.get(base + "/metrics", timeout=5).text
    assert 'demo_http_requests_total{route="/api/hello",code="2xx"} 3' in text
    assert 'demo_http_requests_total{route="other",code="4xx"} 1' in text
    assert "demo_http_request_duration_seconds_bucket{le=\"+Inf\"}" in text
    assert "process_resident_memory_bytes" in text
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def test_graceful_stop_and_json_logs(app):
    p, base = app
    p.signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 0
    err = p.stderr()
    assert '"msg":"demo-app serving"' in err and '"svc":"web"' in err
    assert '"msg":"stopped"' in err
