"""role edge: the load balancer with real backends (demo-apps and Python servers)."""
import http.server
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter

import pytest
import requests

from conftest import free_port, make_cert, run_cairn, wait_for, write_stack


class EchoHandler(http.server.BaseHTTPRequestHandler):
    """Answers with the request it saw, as JSON; /big streams 5 MiB; /bad is malformed."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path == "/big":
            body = bytes(range(256)) * (5 * 4096)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"alpha-", b"beta-", b"gamma"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path == "/bad":
            self.wfile.write(b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok")
            self.close_connection = True
            return
        body = json.dumps({"path": self.path, "method": self.command,
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Secret", "backend-internal")
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET


@pytest.fixture
def echo():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def ready(url):
    wait_for(lambda: requests.get(url, timeout=1).status_code == 200, timeout=10, what=url)


@pytest.fixture
def apps(start, tmp_path):
    """Three demo-apps, each its own process (so that one can be killed for good)."""
    ports = [free_port() for _ in range(3)]
    text = "services:\n" + "".join(
        f"  app-{i + 1}: {{role: demo-app, listen: [\"127.0.0.1:{p}\"]}}\n" for i, p in enumerate(ports))
    path = write_stack(tmp_path, text, name="apps.yaml")
    procs = [start(["run", f"app-{i + 1}", "-c", path], name=f"app{i + 1}") for i in range(3)]
    for p in ports:
        ready(f"http://127.0.0.1:{p}/-/ready")
    return ports, procs


def run_edge(start, tmp_path, body, name="edge"):
    port, admin = free_port(), free_port()
    text = f"""\
services:
  lb:
    role: edge
    listen: [{{address: "127.0.0.1:{port}"}}]
    admin: "127.0.0.1:{admin}"
{body}"""
    path = write_stack(tmp_path, text, name=f"{name}.yaml")
    p = start(["run", "lb", "-c", path], name=name)
    ready(f"http://127.0.0.1:{admin}/-/ready")
    return f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", p


def servers(ports):
    return "[" + ", ".join(f'"127.0.0.1:{p}"' for p in ports) + "]"


def test_round_robin_spreads_and_forwards_headers(start, tmp_path, apps, echo):
    ports, _ = apps
    base, admin, lb = run_edge(start, tmp_path, f"""\
    routes:
      - {{path: /echo, backend: echo,
         request_headers: {{set: {{X-Env: test}}, remove: [X-Drop]}},
         response_headers: {{set: {{X-Edge: cairn}}, remove: [X-Secret]}}}}
      - {{path: /, backend: app}}
    backends:
      app: {{servers: {servers(ports)}, balance: round_robin}}
      echo: {{servers: ["127.0.0.1:{echo}"]}}
""")
    c = Counter(requests.get(base + "/api/hello", timeout=5).json()["instance"] for _ in range(90))
    assert set(c) == {"app-1", "app-2", "app-3"}
    assert all(n == 30 for n in c.values()), c

    r = requests.get(base + "/echo/x?y=1", headers={"X-Drop": "1", "X-Forwarded-For": "10.9.9.9",
                                                    "Connection": "close, X-Hop", "X-Hop": "h"},
                     timeout=5)
    seen = r.json()["headers"]
    assert r.json()["path"] == "/echo/x?y=1"
    assert seen["x-env"] == "test" and "x-drop" not in seen and "x-hop" not in seen
    assert seen["x-forwarded-for"] == "10.9.9.9, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == base.split("//")[1]
    assert seen["forwarded"].startswith("for=127.0.0.1;proto=http;host=")
    assert len(seen["x-request-id"]) == 36 and seen["x-request-id"] == r.headers["X-Request-Id"]
    assert seen["traceparent"].startswith("00-") and len(seen["traceparent"]) == 55
    assert r.headers["X-Edge"] == "cairn" and "X-Secret" not in r.headers
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    seen = requests.get(base + "/echo", headers={"traceparent": tp, "X-Request-Id": "abc"},
                        timeout=5).json()["headers"]
    assert seen["traceparent"] == tp and seen["x-request-id"] == "abc"

    # a request body is passed on with its length
    r = requests.post(base + "/echo", data=b"x" * 100000, timeout=5)
    assert r.json()["headers"]["content-length"] == "100000"
    r = requests.get(base + "/nope", timeout=5)     # routed to the apps: their 404 passes
    assert r.status_code == 404 and r.headers["X-Served-By"].startswith("app-")

    # the access log has one line per request with the timings
    lb.signal(signal.SIGTERM)
    assert lb.wait(timeout=10) == 0
    assert "msg=access" in lb.stderr() and "t_first_byte_ms=" in lb.stderr()


def test_streaming_chunked_and_big_bodies(start, tmp_path, echo):
    base, _, _ = run_edge(start, tmp_path, f"""\
    access_log: false
    routes: [{{path: /, backend: echo}}]
    backends:
      echo: {{servers: ["127.0.0.1:{echo}"]}}
""")
    big = requests.get(base + "/big", timeout=10)
    assert big.status_code == 200 and big.content == bytes(range(256)) * (5 * 4096)
    r = requests.get(base + "/chunked", timeout=5)
    assert r.text == "alpha-beta-gamma"
    # a malformed response gets the client a 502, and the edge keeps serving
    r = requests.get(base + "/bad", timeout=5)
    assert r.status_code == 502
    assert requests.get(base + "/ok", timeout=5).status_code == 200


def test_hash_affinity(start, tmp_path, apps):
    ports, _ = apps
    base, _, _ = run_edge(start, tmp_path, f"""\
    routes: [{{path: /, backend: app}}]
    backends:
      app: {{servers: {servers(ports)}, balance: hash, hash: {{header: X-User}}}}
""")
    owners = {}
    for user in range(30):
        got = {requests.get(base + "/api/hello", headers={"X-User": f"user{user}"}, timeout=5)
               .json()["instance"] for _ in range(5)}
        assert len(got) == 1       # the same user always lands on the same instance
        owners[user] = got.pop()
    assert len(set(owners.values())) == 3


def test_health_checks_take_servers_out_and_back(start, tmp_path, apps):
    ports, _ = apps
    base, admin, lb = run_edge(start, tmp_path, f"""\
    routes: [{{path: /, backend: app}}]
    backends:
      app:
        servers: {servers(ports)}
        balance: least_conn
        health: {{http: {{path: /healthz}}, interval: 200ms, timeout: 500ms, rise: 2, fall: 2}}
""")
    requests.post(f"http://127.0.0.1:{ports[1]}/-/faults?healthy=false", timeout=5)
    t0 = time.monotonic()

    def app2_down():
        st = requests.get(admin + "/api/backends", timeout=5).json()["backends"][0]["servers"]
        return st[1]["state"] == "down"
    wait_for(app2_down, timeout=3, what="app-2 marked down")
    assert time.monotonic() - t0 < 2 * 0.2 + 1.0      # fall x interval, plus slack
    got = Counter(requests.get(base + "/api/hello", timeout=5).json()["instance"] for _ in range(60))
    assert "app-2" not in got
    assert 'edge_server_up{backend="app",server="127.0.0.1:%d"} 0' % ports[1] in \
        requests.get(admin + "/metrics", timeout=5).text
    requests.post(f"http://127.0.0.1:{ports[1]}/-/faults?healthy=true", timeout=5)
    wait_for(lambda: not app2_down(), timeout=3, what="app-2 back")
    got = Counter(requests.get(base + "/api/hello", timeout=5).json()["instance"] for _ in range(60))
    assert got["app-2"] > 0
    assert 'msg="server down" backend=app server=127.0.0.1:%d' % ports[1] in lb.stderr()

    # drain through the admin API
    r = requests.post(admin + f"/api/backends/app/servers/127.0.0.1:{ports[0]}/drain", timeout=5)
    assert r.status_code == 200
    got = Counter(requests.get(base + "/api/hello", timeout=5).json()["instance"] for _ in range(30))
    assert "app-1" not in got
    requests.post(admin + f"/api/backends/app/servers/127.0.0.1:{ports[0]}/enable", timeout=5)


def test_killing_a_backend_under_load_fails_no_request(start, tmp_path, apps):
    ports, procs = apps
    base, admin, _ = run_edge(start, tmp_path, f"""\
    access_log: false
    routes: [{{path: /, backend: app}}]
    backends:
      app:
        servers: {servers(ports)}
        balance: round_robin
        retries: 2
        health: {{http: {{path: /healthz}}, interval: 500ms, timeout: 300ms, rise: 2, fall: 2}}
""")
    failures = []
    statuses = Counter()

    def load():
        with requests.Session() as s:
            for i in range(2000):
                try:
                    r = s.get(base + "/api/hello", timeout=5)
                    statuses[r.status_code] += 1
                    if r.status_code != 200:
                        failures.append(r.status_code)
                except requests.RequestException as e:
                    failures.append(repr(e))

    t = threading.Thread(target=load)
    t.start()
    time.sleep(0.3)
    os.kill(procs[1].pid, signal.SIGKILL)
    t.join()
    assert failures == [], (failures[:5], statuses)
    assert statuses[200] == 2000


def test_rate_limit_and_deny(start, tmp_path, apps):
    ports, _ = apps
    base, admin, _ = run_edge(start, tmp_path, f"""\
    routes:
      - {{path: /private, backend: app, deny: ["127.0.0.0/8"]}}
      - {{path: /, backend: app, rate_limit: {{rps: 2, burst: 5}}}}
    backends:
      app: {{servers: {servers(ports)}}}
""")
    codes = [requests.get(base + "/healthz", timeout=5) for _ in range(12)]
    assert [r.status_code for r in codes[:5]] == [200] * 5
    limited = [r for r in codes if r.status_code == 429]
    assert len(limited) >= 6
    assert int(limited[0].headers["Retry-After"]) >= 1
    time.sleep(1.1)
    assert requests.get(base + "/healthz", timeout=5).status_code == 200   # tokens refill
    assert requests.get(base + "/private/x", timeout=5).status_code == 403
    assert "edge_rate_limited_total" in requests.get(admin + "/metrics", timeout=5).text


def test_listener_deny_closes_connection(start, tmp_path, apps):
    ports, _ = apps
    port, admin = free_port(), free_port()
    path = write_stack(tmp_path, f"""\
services:
  lb:
    role: edge
    listen: [{{address: "127.0.0.1:{port}", deny: ["127.0.0.1/32"]}}]
    admin: "127.0.0.1:{admin}"
    routes: [{{path: /, backend: app}}]
    backends: {{app: {{servers: {servers(ports)}}}}}
""", name="deny.yaml")
    start(["run", "lb", "-c", path], name="deny")
    ready(f"http://127.0.0.1:{admin}/-/ready")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=5)


def test_no_route_no_server_and_redirect(start, tmp_path):
    dead = free_port()
    base, _, _ = run_edge(start, tmp_path, f"""\
    routes:
      - {{host: "*.example.test", path: /, backend: dead}}
      - {{host: secure.test, path: /, backend: dead, redirect_https: true}}
    backends:
      dead: {{servers: ["127.0.0.1:{dead}"], retries: 1}}
""")
    assert requests.get(base + "/", timeout=5).status_code == 404
    r = requests.get(base + "/x", headers={"Host": "a.example.test"}, timeout=5)
    assert r.status_code == 502 and "X-Request-Id" in r.headers
    r = requests.get(base + "/x", headers={"Host": "example.test"}, timeout=5)
    assert r.status_code == 404     # the wildcard needs a label before the suffix
    r = requests.get(base + "/a?b=1", headers={"Host": "secure.test:8080"}, allow_redirects=False,
                     timeout=5)
    assert r.status_code == 308 and r.headers["Location"] == "https://secure.test/a?b=1"


def test_tls_termination_with_sni(start, tmp_path, apps):
    ports, _ = apps
    a_cert, a_key = make_cert(tmp_path, "a.test")
    b_cert, b_key = make_cert(tmp_path, "b.test")
    port, admin = free_port(), free_port()
    path = write_stack(tmp_path, f"""\
services:
  lb:
    role: edge
    listen:
      - address: "127.0.0.1:{port}"
        tls: {{certs: [{{cert: a.test.pem, key: a.test.key}}, {{cert: b.test.pem, key: b.test.key}}]}}
    admin: "127.0.0.1:{admin}"
    routes: [{{path: /, backend: app}}]
    backends: {{app: {{servers: {servers(ports)}}}}}
""", name="tls.yaml")
    start(["run", "lb", "-c", path], name="tls")
    ready(f"http://127.0.0.1:{admin}/-/ready")
    for name, cert in (("a.test", a_cert), ("b.test", b_cert)):
        out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                              "-servername", name, "-alpn", "http/1.1"],
                             input="", capture_output=True, text=True, timeout=10).stdout
        assert f"subject=CN = {name}" in out
        assert "ALPN protocol: http/1.1" in out
        r = subprocess.run(["curl", "-sS", "--cacert", str(cert), "--resolve", f"{name}:{port}:127.0.0.1",
                            f"https://{name}:{port}/api/hello"], capture_output=True, text=True,
                           timeout=10)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["instance"].startswith("app-")
    # session resumption (TLS 1.3 tickets, TLS 1.2 too), also for the SNI-chosen certificate
    for ver in ("-tls1_3", "-tls1_2"):
        sess = tmp_path / f"sess{ver}.pem"
        req = "GET /healthz HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n"
        first = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "b.test",
                                ver, "-ign_eof", "-sess_out", str(sess)], input=req, capture_output=True, text=True,
                               timeout=10).stdout
        assert "New, TLSv1." in first
        again = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "b.test",
                                ver, "-ign_eof", "-sess_in", str(sess)], input=req, capture_output=True, text=True,
                               timeout=10).stdout
        assert "Reused, TLSv1." in again, ver
    # X-Forwarded-Proto says https
    ctx = ssl.create_default_context(cafile=str(a_cert))
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="a.test") as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    assert data.startswith(b"HTTP/1.1 200")


def test_idle_slowloris_connections_do_not_block_service(start, tmp_path, apps):
    ports, _ = apps
    base, _, _ = run_edge(start, tmp_path, f"""\
    access_log: false
    routes: [{{path: /, backend: app}}]
    backends: {{app: {{servers: {servers(ports)}}}}}
""")
    port = int(base.rsplit(":", 1)[1])
    idle = []
    try:
        for i in range(1000):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")   # never finished
            idle.append(s)
        t0 = time.monotonic()
        for _ in range(50):
            assert requests.get(base + "/healthz", timeout=5).status_code == 200
        assert time.monotonic() - t0 < 10
    finally:
        for s in idle:
            s.close()


def test_reload_under_load_loses_nothing(start, tmp_path, apps):
    ports, _ = apps
    port, admin = free_port(), free_port()

    def stack(backends, extra_route=""):
        return f"""\
services:
  lb:
    role: edge
    listen: [{{address: "127.0.0.1:{port}"}}]
    admin: "127.0.0.1:{admin}"
    access_log: false
    routes:
{extra_route}      - {{path: /, backend: app}}
    backends:
      app: {{servers: {servers(backends)}}}
"""
    path = write_stack(tmp_path, stack(ports[:1]), name="reload.yaml")
    lb = start(["run", "lb", "-c", path], name="reload")
    ready(f"http://127.0.0.1:{admin}/-/ready")
    base = f"http://127.0.0.1:{port}"
    assert requests.get(base + "/api/hello", timeout=5).json()["instance"] == "app-1"

    failures, seen = [], Counter()
    stop = threading.Event()

    def load():
        with requests.Session() as s:      # keep-alive across the reloads
            while not stop.is_set():
                try:
                    r = s.get(base + "/api/hello", timeout=5)
                    if r.status_code != 200:
                        failures.append(r.status_code)
                    else:
                        seen[r.json()["instance"]] += 1
                except requests.RequestException as e:
                    failures.append(repr(e))

    threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        # a slow request in flight across the reload finishes on the old configuration
        slow = {}
        st = threading.Thread(target=lambda: slow.update(
            r=requests.get(base + "/api/hello?latency=800ms", timeout=5)))
        st.start()
        time.sleep(0.3)
        # reload 1 (SIGHUP): move traffic to app-2 and app-3, add a route
        with open(path, "w") as f:
            f.write(stack(ports[1:], '      - {path: /new, backend: app, response_headers: {set: {X-Gen: two}}}\n'))
        lb.signal(signal.SIGHUP)
        wait_for(lambda: requests.get(base + "/new", timeout=5).headers.get("X-Gen") == "two", timeout=5,
                 what="new route live")
        time.sleep(0.5)
        # reload 2 (admin API) with a broken file: refused, the current one keeps serving
        with open(path, "w") as f:
            f.write(stack(ports[1:]).replace("backend: app", "backend: nowhere"))
        r = requests.post(f"http://127.0.0.1:{admin}/-/reload", timeout=5)
        assert r.status_code == 400 and 'backend "nowhere" is not defined' in r.text
        time.sleep(0.5)
        # reload 3 (admin API) back to all three
        with open(path, "w") as f:
            f.write(stack(ports))
        assert requests.post(f"http://127.0.0.1:{admin}/-/reload", timeout=5).status_code == 200
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    st.join()
    assert slow["r"].status_code == 200 and slow["r"].json()["instance"] == "app-1"
    assert failures == [], failures[:5]
    assert seen["app-2"] > 0 and seen["app-3"] > 0
    assert "configuration reloaded" in lb.stderr() and "reload refused" in lb.stderr()
    lb.signal(signal.SIGTERM)
    assert lb.wait(timeout=10) == 0


def upgrade_echo_server():
    """A backend that accepts an Upgrade, answers 101, then echoes bytes (uppercased)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def serve(c):
        with c:
            data = b""
            while b"\r\n\r\n" not in data:
                data += c.recv(4096)
            head, rest = data.split(b"\r\n\r\n", 1)
            if b"upgrade: websocket" not in head.lower() or b"connection: upgrade" not in head.lower():
                c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\n\r\n" + rest.upper())
            while True:
                b = c.recv(65536)
                if not b:
                    c.shutdown(socket.SHUT_WR)
                    return
                c.sendall(b.upper())

    def accept_loop():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    return srv


def test_websocket_upgrade_is_tunnelled(start, tmp_path):
    srv = upgrade_echo_server()
    try:
        base, _, _ = run_edge(start, tmp_path, f"""\
    routes: [{{path: /, backend: ws}}]
    backends: {{ws: {{servers: ["127.0.0.1:{srv.getsockname()[1]}"]}}}}
""")
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                      b"early")
            data = b""
            while b"EARLY" not in data:
                data += s.recv(4096)
            assert data.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
            payload = bytes(range(97, 123)) * 20000          # 520 KB through the tunnel
            got = b""
            sender = threading.Thread(target=s.sendall, args=(payload,))
            sender.start()
            while len(got) < len(payload):
                got += s.recv(65536)
            sender.join()
            assert got == payload.upper()
            s.shutdown(socket.SHUT_WR)          # half-close is passed on, then the server closes
            assert s.recv(10) == b""
        # a normal request on the same edge still works (400 from this backend)
        assert requests.get(base + "/", timeout=5).status_code == 400
    finally:
        srv.close()


def test_l4_tcp_mode_balances_and_fails_over(start, tmp_path, apps):
    ports, procs = apps
    tcp_port, tls_port, admin = free_port(), free_port(), free_port()
    cert, key = make_cert(tmp_path, "l4.test")
    path = write_stack(tmp_path, f"""\
services:
  lb:
    role: edge
    listen:
      - {{address: "127.0.0.1:{tcp_port}", mode: tcp, backend: app}}
      - {{address: "127.0.0.1:{tls_port}", mode: tcp, backend: app,
         tls: {{certs: [{{cert: l4.test.pem, key: l4.test.key}}]}}}}
    admin: "127.0.0.1:{admin}"
    backends:
      app: {{servers: {servers(ports)}, balance: round_robin, retries: 2}}
""", name="l4.yaml")
    start(["run", "lb", "-c", path], name="l4")
    ready(f"http://127.0.0.1:{admin}/-/ready")
    # HTTP spoken through the TCP tunnel: one connection each, spread over the servers
    got = Counter()
    for _ in range(30):
        with requests.Session() as s:
            got[s.get(f"http://127.0.0.1:{tcp_port}/api/hello", timeout=5).json()["instance"]] += 1
    assert set(got) == {"app-1", "app-2", "app-3"}
    # TLS terminated at the edge, plain TCP behind it
    r = subprocess.run(["curl", "-sS", "--cacert", str(cert), "--resolve", f"l4.test:{tls_port}:127.0.0.1",
                        f"https://l4.test:{tls_port}/healthz"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
    # max_conns_per_ip applies to L4 connections too (see test_max_conns_per_ip for HTTP)
    # a dead server: connects fail over to the others
    os.kill(procs[0].pid, signal.SIGKILL)
    procs[0].p.wait(timeout=5)
    for _ in range(20):
        with requests.Session() as s:
            assert s.get(f"http://127.0.0.1:{tcp_port}/healthz", timeout=5).status_code == 200


def test_max_conns_per_ip(start, tmp_path, apps):
    ports, _ = apps
    base, admin, _ = run_edge(start, tmp_path, f"""\
    limits: {{max_conns_per_ip: 5}}
    routes: [{{path: /, backend: app}}]
    backends: {{app: {{servers: {servers(ports)}}}}}
""")
    port = int(base.rsplit(":", 1)[1])
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
    try:
        for s in held:     # the five are served
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
        extra = socket.create_connection(("127.0.0.1", port))
        extra.settimeout(5)
        try:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            assert extra.recv(4096) == b""      # the sixth is closed
        except ConnectionResetError:
            pass
        extra.close()
    finally:
        for s in held:
            s.close()
    # once they are gone, new connections are admitted again
    wait_for(lambda: requests.get(base + "/healthz", timeout=2).status_code == 200, timeout=5,
             what="admitted again")


def tls_echo_backend(tmp_path, name, require_client_cert=None):
    cert, key = make_cert(tmp_path, name)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(str(require_client_cert))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, cert


def test_tls_towards_backends(start, tmp_path):
    client_cert, client_key = make_cert(tmp_path, "edge-client")
    srv, cert = tls_echo_backend(tmp_path, "backend.test")
    msrv, mcert = tls_echo_backend(tmp_path, "mtls.test", require_client_cert=client_cert)
    try:
        p, mp = srv.server_address[1], msrv.server_address[1]
        base, admin, _ = run_edge(start, tmp_path, f"""\
    routes:
      - {{path: /ok, backend: good}}
      - {{path: /badname, backend: badname}}
      - {{path: /insecure, backend: insecure}}
      - {{path: /mtls, backend: mtls}}
      - {{path: /nocert, backend: nocert}}
    backends:
      good: {{servers: ["127.0.0.1:{p}"], tls: {{ca: backend.test.pem, sni: backend.test}},
             health: {{http: {{path: /health}}, interval: 200ms}}}}
      badname: {{servers: ["127.0.0.1:{p}"], tls: {{ca: backend.test.pem, sni: other.test}}, retries: 0}}
      insecure: {{servers: ["127.0.0.1:{p}"], tls: {{verify: false}}}}
      mtls: {{servers: ["127.0.0.1:{mp}"],
             tls: {{verify: false, cert: edge-client.pem, key: edge-client.key}}}}
      nocert: {{servers: ["127.0.0.1:{mp}"], tls: {{verify: false}}, retries: 0}}
""")
        for _ in range(3):      # keep-alive over TLS to the backend
            r = requests.get(base + "/ok/1", timeout=5)
            assert r.status_code == 200 and r.json()["path"] == "/ok/1"
        assert requests.get(base + "/badname", timeout=5).status_code == 502
        assert requests.get(base + "/insecure", timeout=5).status_code == 200
        assert requests.get(base + "/mtls", timeout=5).status_code == 200
        assert requests.get(base + "/nocert", timeout=5).status_code == 502
        st = requests.get(admin + "/api/backends", timeout=5).json()["backends"][0]["servers"][0]
        wait_for(lambda: requests.get(admin + "/api/backends", timeout=5).json()["backends"][0]
                 ["servers"][0]["last_check"] == "http status 200", timeout=5, what="TLS health check")
        assert st["state"] == "up"
    finally:
        srv.shutdown()
        msrv.shutdown()


def test_max_conns_and_queue(start, tmp_path, apps):
    ports, _ = apps
    base, _, _ = run_edge(start, tmp_path, f"""\
    routes:
      - {{host: queued.test, path: /, backend: queued}}
      - {{host: small.test, path: /, backend: small}}
    backends:
      queued: {{servers: ["127.0.0.1:{ports[0]}"], max_conns: 1, queue: {{size: 10, timeout: 5s}}}}
      small: {{servers: ["127.0.0.1:{ports[1]}"], max_conns: 1, queue: {{size: 1, timeout: 5s}}}}
""")
    results = []

    def get(host):
        t0 = time.monotonic()
        r = requests.get(base + "/api/hello?latency=300ms", headers={"Host": host}, timeout=10)
        results.append((host, r.status_code, time.monotonic() - t0))

    # five requests of 300 ms each through one slot: served one after the other
    ts = [threading.Thread(target=get, args=("queued.test",)) for _ in range(5)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert [c for _, c, _ in results] == [200] * 5
    assert time.monotonic() - t0 >= 1.4
    # one slot and one queue place: the third concurrent request is refused at once
    results.clear()
    ts = [threading.Thread(target=get, args=("small.test",)) for _ in range(3)]
    for t in ts:
        t.start()
        time.sleep(0.05)
    for t in ts:
        t.join()
    codes = sorted(c for _, c, _ in results)
    assert codes == [200, 200, 503], results


def test_http2_over_tls(start, tmp_path, echo, apps):
    ports, _ = apps
    cert, key = make_cert(tmp_path, "h2.test")
    port, admin = free_port(), free_port()
    path = write_stack(tmp_path, f"""\
services:
  lb:
    role: edge
    listen: [{{address: "127.0.0.1:{port}", tls: {{certs: [{{cert: h2.test.pem, key: h2.test.key}}]}}}}]
    admin: "127.0.0.1:{admin}"
    access_log: false
    routes:
      - {{path: /api/, backend: app}}
      - {{path: /, backend: echo, response_headers: {{set: {{X-Edge: h2}}}}}}
    backends:
      echo: {{servers: ["127.0.0.1:{echo}"]}}
      app: {{servers: {servers(ports)}}}
""", name="h2.yaml")
    start(["run", "lb", "-c", path], name="h2")
    ready(f"http://127.0.0.1:{admin}/-/ready")
    url = f"https://h2.test:{port}"
    curl = ["curl", "-sS", "--http2", "--cacert", str(cert), "--resolve", f"h2.test:{port}:127.0.0.1"]
    r = subprocess.run(curl + ["-D", "-", url + "/hello?x=1"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("HTTP/2 200"), r.stdout[:200]
    assert "x-edge: h2" in r.stdout.lower()
    body = json.loads(r.stdout.split("\n\n", 1)[1])
    assert body["path"] == "/hello?x=1"
    assert body["headers"]["host"] == f"h2.test:{port}"
    assert body["headers"]["x-forwarded-proto"] == "https"
    # a request body and a large streamed response over h2
    upload = tmp_path / "up.bin"
    upload.write_bytes(b"u" * 1_000_000)
    r = subprocess.run(curl + ["--data-binary", f"@{upload}", url + "/post"], capture_output=True,
                       text=True, timeout=10)
    assert json.loads(r.stdout)["headers"]["content-length"] == "1000000"
    r = subprocess.run(curl + ["-o", str(tmp_path / "big"), "-w", "%{http_version} %{size_download}",
                               url + "/big"], capture_output=True, text=True, timeout=20)
    assert r.stdout == f"2 {256 * 5 * 4096}", r.stdout + r.stderr
    assert (tmp_path / "big").read_bytes() == bytes(range(256)) * (5 * 4096)
    # many concurrent streams on few connections
    r = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "20", f"https://127.0.0.1:{port}/api/hello"],
                       capture_output=True, text=True, timeout=60)
    assert "2000 succeeded, 0 failed" in r.stdout, r.stdout[-800:]
    assert "2000 2xx" in r.stdout
    # a client that gives up mid-request: the stream is dropped, the edge goes on
    r = subprocess.run(curl + ["--max-time", "0.3", url + "/api/hello?latency=2s"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 28   # curl's timeout
    r = subprocess.run(curl + [url + "/api/hello"], capture_output=True, text=True, timeout=10)
    assert json.loads(r.stdout)["instance"].startswith("app-")


class TinyDNS:
    """A real DNS server over UDP (dnspython) whose records the test can change."""

    def __init__(self):
        import dns.message
        import dns.rcode
        import dns.rdatatype
        import dns.rrset
        self.m, self.rcode, self.rdt, self.rrset = dns.message, dns.rcode, dns.rdatatype, dns.rrset
        self.records = {}       # (name, type) -> list of rdata texts
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            q = self.m.from_wire(data)
            r = self.m.make_response(q)
            qname, qtype = q.question[0].name, q.question[0].rdtype
            key = (str(qname).lower(), self.rdt.to_text(qtype))
            names = {k[0] for k in self.records}
            if key in self.records:
                r.answer.append(self.rrset.from_text_list(qname, 1, "IN", key[1], self.records[key]))
            elif key[0] not in names:
                r.set_rcode(self.rcode.NXDOMAIN)
            self.sock.sendto(r.to_wire(), peer)

    def close(self):
        self.sock.close()


def test_backends_from_dns(start, tmp_path, apps):
    ports, _ = apps
    dns = TinyDNS()
    try:
        for i, p in enumerate(ports):
            dns.records[(f"app{i + 1}.test.", "A")] = ["127.0.0.1"]
        dns.records[("_http._tcp.apps.test.", "SRV")] = [f"10 1 {p} app{i + 1}.test." for i, p in enumerate(ports)]
        dns.records[("_http._tcp.apps.test.", "SRV")].append(f"20 1 {ports[0]} backup.test.")
        dns.records[("one.test.", "A")] = ["127.0.0.1"]
        base, admin, lb = run_edge(start, tmp_path, f"""\
    routes:
      - {{path: /one/, backend: one}}
      - {{path: /, backend: app}}
    backends:
      app:
        dns: {{name: _http._tcp.apps.test, type: srv, interval: 300ms, resolver: "127.0.0.1:{dns.port}"}}
        balance: round_robin
      one:
        dns: {{name: one.test, type: a, port: {ports[2]}, interval: 300ms, resolver: "127.0.0.1:{dns.port}"}}
""")
        got = Counter(requests.get(base + "/api/hello", timeout=5).json()["instance"] for _ in range(30))
        assert got == Counter({"app-1": 10, "app-2": 10, "app-3": 10}), got
        r = requests.get(base + "/one/x", timeout=5)
        assert r.status_code == 404 and r.headers["X-Served-By"] == "app-3"
        # the SRV set shrinks: the edge follows within a few intervals
        dns.records[("_http._tcp.apps.test.", "SRV")] = [f"10 1 {ports[1]} app2.test."]

        def only_app2():
            got = {requests.get(base + "/api/hello", timeout=5).json()["instance"] for _ in range(6)}
            return got == {"app-2"}
        wait_for(only_app2, timeout=5, what="edge following DNS")
        st = requests.get(admin + "/api/backends", timeout=5).json()["backends"]
        assert [s["address"] for s in st[0]["servers"]] == [f"127.0.0.1:{ports[1]}"]
        assert 'msg="backend servers changed in DNS" backend=app servers=1' in lb.stderr()
        # a name that stops existing leaves the backend without servers: 503
        del dns.records[("one.test.", "A")]
        wait_for(lambda: requests.get(base + "/one/x", timeout=5).status_code == 503, timeout=5,
                 what="backend emptied")
    finally:
        dns.close()


def test_h2c_prior_knowledge(start, tmp_path, apps):
    """HTTP/2 without TLS, as curl --http2-prior-knowledge and h2load speak it."""
    ports, _ = apps
    base, _, _ = run_edge(start, tmp_path, f"""\
    routes: [{{path: /, backend: app}}]
    backends: {{app: {{servers: {servers(ports)}}}}}
""")
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w",
                        "%{http_version} %{http_code}", base + "/api/hello"], capture_output=True, text=True, timeout=20)
    assert r.stdout == "2 200", r.stdout + r.stderr
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", base + "/api/hello"],
                       capture_output=True, text=True, timeout=20)
    assert r.stdout == "1.1 200", r.stdout + r.stderr       # HTTP/1.1 on the same port
    r = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "20", base + "/api/hello"],
                       capture_output=True, text=True, timeout=60)
    assert "2000 succeeded, 0 failed" in r.stdout and "2000 2xx" in r.stdout, r.stdout


def test_regex_routes(start, tmp_path, apps):
    ports, _ = apps
    base, _, _ = run_edge(start, tmp_path, f"""\
    routes:
      - {{path_regex: "/v[0-9]+/items/[^/]+", backend: two}}
      - {{path: /, backend: one}}
    backends:
      one: {{servers: ["127.0.0.1:{ports[0]}"]}}
      two: {{servers: ["127.0.0.1:{ports[1]}"]}}
""")
    def served(path):
        return requests.get(base + path, timeout=5).headers.get("X-Served-By")
    assert served("/v2/items/abc") == "app-2"
    assert served("/v10/items/x") == "app-2"
    assert served("/v2/items/abc/more") == "app-1"     # the whole path must match
    assert served("/x/v2/items/abc") == "app-1"
    assert served("/v2/items/") == "app-1"
    assert served("/v2/items/%ff") == "app-2"          # bytes, not decoded
    # a bad regex is refused with its position
    bad = write_stack(tmp_path, """\
services:
  lb:
    role: edge
    listen: [{address: "127.0.0.1:1"}]
    admin: "127.0.0.1:2"
    routes: [{path_regex: "/(x", backend: a}]
    backends: {a: {servers: ["127.0.0.1:3"]}}
""", name="bad.yaml")
    c = run_cairn(["check", "-c", bad])
    assert c.returncode == 2 and "bad.yaml:6:" in c.stderr and "invalid regular expression" in c.stderr, c.stderr


def test_dns_backend_added_by_reload(start, tmp_path, apps):
    """A reload that brings the first DNS backend starts resolving it at once."""
    ports, _ = apps
    dns = TinyDNS()
    try:
        dns.records[("late.test.", "A")] = ["127.0.0.1"]
        base, admin, lb = run_edge(start, tmp_path, f"""\
    routes: [{{path: /, backend: app}}]
    backends: {{app: {{servers: ["127.0.0.1:{ports[0]}"]}}}}
""")
        assert requests.get(base + "/api/hello", timeout=5).json()["instance"] == "app-1"
        path = tmp_path / "edge.yaml"
        text = path.read_text().replace("    routes: [{path: /, backend: app}]", f"""\
    routes:
      - {{path: /late/, backend: late}}
      - {{path: /, backend: app}}""").replace(
            f'    backends: {{app: {{servers: ["127.0.0.1:{ports[0]}"]}}}}', f"""\
    backends:
      app: {{servers: ["127.0.0.1:{ports[0]}"]}}
      late:
        dns: {{name: late.test, type: a, port: {ports[1]}, interval: 300ms, resolver: "127.0.0.1:{dns.port}"}}""")
        path.write_text(text)
        lb.signal(signal.SIGHUP)
        wait_for(lambda: requests.get(base + "/late/x", timeout=5).headers.get("X-Served-By") == "app-2",
                 timeout=10, what="the DNS backend added by the reload")
        assert "at the next restart" not in lb.stderr()
    finally:
        dns.close()


def test_l4_max_conns_per_ip_and_header_limits(start, tmp_path, apps):
    ports, _ = apps
    tcp_port, http_port, admin = free_port(), free_port(), free_port()
    path = write_stack(tmp_path, f"""\
services:
  lb:
    role: edge
    listen:
      - {{address: "127.0.0.1:{tcp_port}", mode: tcp, backend: app}}
      - {{address: "127.0.0.1:{http_port}"}}
    admin: "127.0.0.1:{admin}"
    limits: {{max_conns_per_ip: 2, max_header_bytes: 2KiB, max_headers: 10}}
    routes: [{{path: /, backend: app}}]
    backends: {{app: {{servers: {servers(ports)}}}}}
""", name="l4lim.yaml")
    start(["run", "lb", "-c", path], name="l4lim")
    ready(f"http://127.0.0.1:{admin}/-/ready")
    held = [socket.create_connection(("127.0.0.1", tcp_port)) for _ in range(2)]
    try:
        for s in held:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            try:
                assert s.recv(4096) == b""
            except ConnectionResetError:
                pass
    finally:
        for s in held:
            s.close()
    wait_for(lambda: requests.get(f"http://127.0.0.1:{tcp_port}/healthz", timeout=2).ok, timeout=5,
             what="admitted again")
    r = requests.get(f"http://127.0.0.1:{http_port}/healthz", headers={"X-Big": "x" * 3000}, timeout=5)
    assert r.status_code == 431
    r = requests.get(f"http://127.0.0.1:{http_port}/healthz",
                     headers={f"X-H{i}": "1" for i in range(12)}, timeout=5)
    assert r.status_code == 431
    assert requests.get(f"http://127.0.0.1:{http_port}/healthz", timeout=5).status_code == 200


class FlakyOrigin:
    """An origin that answers 502 while `bad` is set and 200 otherwise, counting requests."""

    def __init__(self):
        outer = self
        self.bad = True
        self.hits = 0

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.hits += 1
                status, body = (502, b"origin says bad") if outer.bad else (200, b"origin ok")
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def flaky():
    o = FlakyOrigin()
    yield o
    o.close()


def test_single_server_answering_502_is_never_taken_out(start, tmp_path, flaky):
    """Default backend settings: passive ejection may not take out the only server
    (eject.max_percent 50), and its 502s reach the client as it sent them."""
    base, admin, lb = run_edge(start, tmp_path, f"""\
    routes: [{{path: /, backend: origin}}]
    backends: {{origin: {{servers: ["127.0.0.1:{flaky.port}"]}}}}
""")
    for i in range(20):
        r = requests.get(base + f"/x{i}", timeout=5)
        assert (r.status_code, r.text) == (502, "origin says bad"), i
    assert flaky.hits == 20                # every request forwarded, none retried on the same server
    st = requests.get(admin + "/api/backends", timeout=5).json()["backends"][0]
    assert st["servers"][0]["state"] == "up" and st["panic"] is False
    flaky.bad = False
    r = requests.get(base + "/after", timeout=5)
    assert (r.status_code, r.text) == (200, "origin ok")
    assert 'msg="server not ejected: eject.max_percent of the backend already out"' in lb.stderr()
    assert 'msg="server ejected"' not in lb.stderr()


def test_ejection_is_capped_at_max_percent(start, tmp_path, flaky, echo):
    """Of two servers, the failing one is ejected (1 of 2 = 50%, the default cap) and
    its requests are retried on the other, so no client sees its 502s."""
    base, admin, lb = run_edge(start, tmp_path, f"""\
    routes: [{{path: /, backend: two}}]
    backends:
      two: {{servers: ["127.0.0.1:{flaky.port}", "127.0.0.1:{echo}"]}}
""")
    for i in range(20):
        assert requests.get(base + f"/y{i}", timeout=5).status_code == 200, i
    st = requests.get(admin + "/api/backends", timeout=5).json()["backends"][0]["servers"]
    assert [s["state"] for s in st] == ["ejected", "up"]
    assert f'msg="server ejected" backend=two server=127.0.0.1:{flaky.port}' in lb.stderr()


def test_panic_mode_when_every_server_is_down(start, tmp_path, apps):
    """Health checks mark every server down: the backend spreads requests over all of
    them (fail open) and says so in the log, /api/backends and edge_backend_panic;
    `when_all_down: fail` answers 503 instead."""
    ports, _ = apps
    base, admin, lb = run_edge(start, tmp_path, f"""\
    routes:
      - {{path: /strict/, backend: strict}}
      - {{path: /, backend: app}}
    backends:
      app:
        servers: {servers(ports)}
        health: {{http: {{path: /healthz}}}}          # default interval, timeout, rise, fall
      strict:
        servers: {servers(ports)}
        when_all_down: fail
        health: {{http: {{path: /healthz}}}}
""")
    for p in ports:
        requests.post(f"http://127.0.0.1:{p}/-/faults?healthy=false", timeout=5)

    def backends():
        return {b["name"]: b for b in requests.get(admin + "/api/backends", timeout=5).json()["backends"]}
    wait_for(lambda: all(s["state"] == "down" for b in backends().values() for s in b["servers"]),
             timeout=15, what="every server down")
    got = Counter(requests.get(base + "/api/hello", timeout=5).json()["instance"] for _ in range(60))
    assert set(got) == {"app-1", "app-2", "app-3"}, got
    assert requests.get(base + "/strict/x", timeout=5).status_code == 503
    b = backends()
    assert b["app"]["panic"] is True and b["strict"]["panic"] is False
    assert b["strict"]["when_all_down"] == "fail"
    assert 'edge_backend_panic{backend="app"} 1' in requests.get(admin + "/metrics", timeout=5).text
    assert 'msg="backend in panic: no server healthy, requests go to all servers" backend=app' in lb.stderr()

    requests.post(f"http://127.0.0.1:{ports[2]}/-/faults?healthy=true", timeout=5)
    wait_for(lambda: backends()["app"]["servers"][2]["state"] == "up", timeout=15, what="app-3 up")
    got = Counter(requests.get(base + "/api/hello", timeout=5).json()["instance"] for _ in range(30))
    assert set(got) == {"app-3"}, got
    assert backends()["app"]["panic"] is False
    assert 'edge_backend_panic{backend="app"} 0' in requests.get(admin + "/metrics", timeout=5).text
    assert 'msg="backend out of panic" backend=app' in lb.stderr()


def slices(pid):
    """Each thread's EEVDF slice in ns, from /proc (None where the kernel has none)."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/sched") as f:
            vals = [int(line.split(":")[1]) for line in f if line.startswith("se.slice")]
        out.append(vals[0] if vals else None)
    return out


def test_workers_ask_for_short_slices(start, tmp_path, apps):
    if not slices(os.getpid())[0]:
        pytest.skip("this kernel shows no se.slice (EEVDF slices from Linux 6.12)")
    base, _, p = run_edge(start, tmp_path, f"""\
    threads: 2
    routes: [{{path: /, backend: b}}]
    backends: {{b: {{servers: {servers(apps[0])}}}}}
""")
    assert requests.get(base + "/", timeout=5).status_code == 200
    got = slices(p.pid)
    assert len(got) >= 2 and all(s == 100000 for s in got), got
    base, _, p = run_edge(start, tmp_path, f"""\
    threads: 2
    short_slices: false
    routes: [{{path: /, backend: b}}]
    backends: {{b: {{servers: {servers(apps[0])}}}}}
""", name="edge-kernel-slice")
    assert requests.get(base + "/", timeout=5).status_code == 200
    assert all(s == slices(os.getpid())[0] for s in slices(p.pid)), slices(p.pid)
