"""The core HTTP server as clients see it: strict parsing, limits, keep-alive."""
import socket
import threading

import pytest
import requests

from conftest import free_port, wait_for, write_stack


@pytest.fixture
def port(start, tmp_path):
    port = free_port()
    path = write_stack(tmp_path, f"""\
services:
  web: {{role: demo-app, listen: ["127.0.0.1:{port}"], threads: 2}}
""")
    start(["run", "web", "-c", path])
    wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).ok, timeout=10,
             what="ready")
    return port


def exchange(port, data, timeout=5):
    """Sends raw bytes, reads until the server closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except socket.timeout:
            chunks.append(b"<timeout>")
        return b"".join(chunks)


@pytest.mark.parametrize("raw,status", [
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n  folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nBad\x00Name: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: a\n\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"b" * 70000 + b"\r\n\r\n", 431),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999\r\n\r\n", 413),
])
def test_malformed_requests_get_4xx_and_close(port, raw, status):
    out = exchange(port, raw)
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:200]
    assert b"Connection: close\r\n" in out
    assert not out.endswith(b"<timeout>")   # the server closed the connection


def test_bad_client_does_not_disturb_others(port):
    results = []

    def good():
        with requests.Session() as s:
            for _ in range(20):
                results.append(s.get(f"http://127.0.0.1:{port}/api/hello", timeout=5).status_code)

    t = threading.Thread(target=good)
    t.start()
    for _ in range(20):
        exchange(port, b"\x16\x03\x01garbage\r\n\r\n")
    t.join()
    assert results == [200] * 20


def test_keepalive_and_pipelining(port):
    req = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
    last = b"GET /api/hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    out = exchange(port, req * 5 + last)
    assert out.count(b"HTTP/1.1 200 OK") == 6
    assert out.count(b"ok\n") == 5 and out.rstrip().endswith(b"}")


def test_http10_and_head(port):
    out = exchange(port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in out
    out = exchange(port, b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert b"Content-Length: " in out and out.endswith(b"\r\n\r\n")


def test_slowloris_gets_408(start, tmp_path):
    # the default header timeout is 10 s; a client that stops mid-head is cut off
    port = free_port()
    path = write_stack(tmp_path, f"services:\n  w: {{role: demo-app, listen: [\"127.0.0.1:{port}\"]}}\n",
                       name="s.yaml")
    start(["run", "w", "-c", path], name="slow")
    wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).ok, timeout=10,
             what="ready")
    out = exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ", timeout=15)
    assert out.startswith(b"HTTP/1.1 408 ")
