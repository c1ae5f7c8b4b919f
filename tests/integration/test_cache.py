"""The CDN tier: the edge's HTTP cache (RFC 9111) against a controllable origin."""
import http.server
import signal
import threading
import time

import subprocess

import pytest
import requests

from conftest import free_port, make_cert, wait_for, write_stack


class Origin(http.server.BaseHTTPRequestHandler):
    """Answers with what the test asked for in the query string, and counts hits."""
    protocol_version = "HTTP/1.1"
    hits = {}
    seen = {}       # path -> the request fields of each request
    down = False
    lock = threading.Lock()

    def log_message(self, *a):
        pass

    def do_GET(self):
        from urllib.parse import urlparse, parse_qs
        u = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        with Origin.lock:
            Origin.hits[u.path] = Origin.hits.get(u.path, 0) + 1
            n = Origin.hits[u.path]
            Origin.seen.setdefault(u.path, []).append(dict(self.headers.items()))
        if q.get("delay"):
            time.sleep(float(q["delay"]))
        if Origin.down:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        etag = q.get("etag")
        inm = self.headers.get("If-None-Match")
        if etag and inm == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            if q.get("cc"):
                self.send_header("Cache-Control", q["cc"])
            self.end_headers()
            return
        body = f"{u.path} #{n} {self.headers.get('Accept-Language', '')}".encode()
        if q.get("size"):
            body = body.ljust(int(q["size"]), b".")
        self.send_response(int(q.get("status", 200)))
        if q.get("cc"):
            self.send_header("Cache-Control", q["cc"])
        if etag:
            self.send_header("ETag", etag)
        if q.get("vary"):
            self.send_header("Vary", q["vary"])
        if q.get("cookie"):
            self.send_header("Set-Cookie", "a=b")
        if q.get("tag"):
            self.send_header("Surrogate-Key", q["tag"])
        if q.get("sc"):
            self.send_header("Surrogate-Control", q["sc"])
        self.send_header("Capability-Seen", self.headers.get("Surrogate-Capability", ""))
        self.send_header("Host-Seen", self.headers.get("Host", ""))
        if q.get("lm"):
            self.send_header("Last-Modified", q["lm"])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        parts = int(q.get("trickle", 1))     # the body in parts, gap seconds apart
        step = -(-len(body) // parts)
        if q.get("cut"):                      # only the first cut bytes, then a closed connection
            body = body[:int(q["cut"])]
            self.close_connection = True
        try:
            for i in range(0, len(body), step):
                if i:
                    time.sleep(float(q.get("gap", 0)))
                self.wfile.write(body[i:i + step])
                self.wfile.flush()
        except OSError:
            pass

    do_HEAD = do_GET

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        self.rfile.read(n)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@pytest.fixture
def cdn(start, tmp_path):
    yield from make_cdn(start, tmp_path, threads=1, memory="1MiB", max_object="64KiB")


@pytest.fixture
def cdn2(start, tmp_path):
    """The same with two worker threads (coalesced requests land on both)."""
    yield from make_cdn(start, tmp_path, threads=2, memory="8MiB", max_object="2MiB")


def start_cdn(start, tmp_path, route, backend, threads=1):
    """Starts an edge whose one route (path /, with the given YAML keys) caches from
    the backend `origin` (given YAML keys); returns its port and admin port once ready."""
    port, admin = free_port(), free_port()
    path = write_stack(tmp_path, f"""\
services:
  cdn:
    role: edge
    threads: {threads}
    listen: ["127.0.0.1:{port}"]
    admin: "127.0.0.1:{admin}"
    routes:
      - {{path: /, backend: origin, {route}}}
    backends:
      origin: {{{backend}}}
""", name="cdn.yaml")
    start(["run", "cdn", "-c", path], name="cdn")
    wait_for(lambda: requests.get(f"http://127.0.0.1:{admin}/-/ready", timeout=1).ok, timeout=10,
             what="cdn ready")
    return port, admin


def make_cdn(start, tmp_path, threads, memory, max_object):
    Origin.hits, Origin.seen = {}, {}
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    srv.request_queue_size = 128
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port, admin = start_cdn(start, tmp_path, f"cache: {{memory: {memory}, max_object: {max_object}}}",
                            f'servers: ["127.0.0.1:{srv.server_address[1]}"]', threads)
    yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
    srv.shutdown()
    srv.server_close()


def get(url, **kw):
    return requests.get(url, timeout=10, **kw)


# Ages and lifetimes are whole seconds (RFC 9111): an object with max-age=1 may be
# stale at once when a second boundary falls between Date and its arrival, so the
# tests use max-age=2 or more where they expect a hit.


def test_fresh_hit_age_and_head(cdn):
    base, _ = cdn
    r1 = get(base + "/a?cc=max-age=60")
    assert r1.headers["X-Cache"] == "MISS" and r1.text == "/a #1 "
    time.sleep(1.1)
    r2 = get(base + "/a?cc=max-age=60")
    assert r2.headers["X-Cache"] == "HIT" and r2.text == "/a #1 "
    assert int(r2.headers["Age"]) >= 1
    h = requests.head(base + "/a?cc=max-age=60", timeout=5)
    assert h.headers["X-Cache"] == "HIT" and h.content == b""
    assert h.headers["Content-Length"] == str(len(r1.content))
    assert Origin.hits["/a"] == 1


def test_expiry_and_revalidation(cdn):
    base, _ = cdn
    u = base + "/r?cc=max-age=2&etag=%22v1%22"
    assert get(u).headers["X-Cache"] == "MISS"
    assert get(u).headers["X-Cache"] == "HIT"
    time.sleep(3.1)  # ages are whole seconds: max-age=2 is surely over
    r = get(u)                              # stale: revalidated with If-None-Match, 304
    assert r.status_code == 200 and r.headers["X-Cache"] == "EXPIRED" and r.text == "/r #1 "
    assert Origin.hits["/r"] == 2
    assert get(u).headers["X-Cache"] == "HIT"    # refreshed by the 304
    # a client conditional request is answered 304 from the cache
    r = get(u, headers={"If-None-Match": '"v1"'})
    assert r.status_code == 304 and r.headers["X-Cache"] == "HIT"


def test_not_stored(cdn):
    base, _ = cdn
    for i, q in enumerate(("cc=no-store", "cc=private,max-age=60", "status=500")):
        path = f"/not-stored-{i}"     # distinct per case (a hash of q could collide)
        for _ in range(2):
            r = get(base + path + "?" + q)
            assert r.headers["X-Cache"] == "MISS", q
        assert Origin.hits[path] == 2, q
    # no-cache: stored but revalidated every time
    u = base + "/nc?cc=no-cache&etag=%22x%22"
    get(u)
    r = get(u)
    assert r.headers["X-Cache"] == "EXPIRED" and Origin.hits["/nc"] == 2
    # a request with no-store passes; POST passes and invalidates
    assert get(base + "/a2?cc=max-age=60").headers["X-Cache"] == "MISS"
    assert get(base + "/a2?cc=max-age=60", headers={"Cache-Control": "no-store"}).headers["X-Cache"] == "PASS"
    requests.post(base + "/a2?cc=max-age=60", data="x", timeout=5)
    assert get(base + "/a2?cc=max-age=60").headers["X-Cache"] == "MISS"


def test_vary_and_heuristic(cdn):
    base, _ = cdn
    u = base + "/v?cc=max-age=60&vary=Accept-Language"
    assert get(u, headers={"Accept-Language": "fr"}).text == "/v #1 fr"
    assert get(u, headers={"Accept-Language": "de"}).text == "/v #2 de"
    r = get(u, headers={"Accept-Language": "fr"})
    assert r.headers["X-Cache"] == "HIT" and r.text == "/v #1 fr"
    # language tags are case-insensitive: the same variant; other values are not
    r = get(u, headers={"Accept-Language": "FR"})
    assert r.headers["X-Cache"] == "HIT" and r.text == "/v #1 fr"
    u2 = base + "/v2?cc=max-age=60&vary=X-Case"
    assert get(u2, headers={"X-Case": "a"}).headers["X-Cache"] == "MISS"
    assert get(u2, headers={"X-Case": "A"}).headers["X-Cache"] == "MISS"
    assert get(base + "/star?cc=max-age=60&vary=*").headers["X-Cache"] == "MISS"
    assert get(base + "/star?cc=max-age=60&vary=*").headers["X-Cache"] == "MISS"
    # heuristic freshness from Last-Modified (10% of its age)
    lm = "Mon, 01 Jan 2024 00:00:00 GMT"
    get(base + "/h?lm=" + lm)
    assert get(base + "/h?lm=" + lm).headers["X-Cache"] == "HIT"


def test_purge(cdn):
    base, admin = cdn
    for p in ("/p/1", "/p/2", "/q/1"):
        get(base + p + "?cc=max-age=60&tag=grp" + p[1])
    assert all(get(base + p + "?cc=max-age=60&tag=grp" + p[1]).headers["X-Cache"] == "HIT"
               for p in ("/p/1", "/p/2", "/q/1"))
    host = base.split("//")[1]
    r = requests.post(admin + f"/api/cache/purge?url={host}/p/1%3Fcc%3Dmax-age%3D60%26tag%3Dgrpp", timeout=5)
    assert r.json()["purged"] == 1
    assert get(base + "/p/1?cc=max-age=60&tag=grpp").headers["X-Cache"] == "MISS"
    assert requests.post(admin + "/api/cache/purge?tag=grpq", timeout=5).json()["purged"] == 1
    assert get(base + "/q/1?cc=max-age=60&tag=grpq").headers["X-Cache"] == "MISS"
    assert requests.post(admin + "/api/cache/purge?prefix=/p/", timeout=5).json()["purged"] == 2
    assert requests.post(admin + "/api/cache/purge?all=1", timeout=5).json()["purged"] >= 1
    assert requests.post(admin + "/api/cache/purge", timeout=5).status_code == 400
    assert requests.get(admin + "/api/cache/purge", timeout=5).status_code == 405
    m = requests.get(admin + "/metrics", timeout=5).text
    assert 'edge_cache_requests_total{cache="/",result="hit"}' in m


def metric(admin, name):
    m = requests.get(admin + "/metrics", timeout=5).text
    return sum(float(l.split()[-1]) for l in m.splitlines() if l.startswith(name))


def test_eviction_is_scan_resistant(cdn):
    base, admin = cdn
    hot = [base + f"/hot{i}?cc=max-age=600&size=40000" for i in range(5)]
    for _ in range(3):           # a working set, used repeatedly
        for u in hot:
            get(u)
    for i in range(60):          # then a scan of 60 one-hit objects of 40 KB through 1 MiB
        get(base + f"/scan{i}?cc=max-age=600&size=40000")
        if i % 10 == 0:
            for u in hot:        # the working set keeps being used
                get(u)
    assert metric(admin, "edge_cache_bytes ") <= 1024 * 1024
    assert metric(admin, "edge_cache_evictions_total") > 0
    assert all(get(u).headers["X-Cache"] == "HIT" for u in hot)
    # objects over max_object are passed through, never stored
    get(base + "/huge?cc=max-age=600&size=100000")
    r = get(base + "/huge?cc=max-age=600&size=100000")
    assert r.headers["X-Cache"] == "MISS" and len(r.content) == 100000


def test_coalescing_100_concurrent_misses_one_fetch(cdn):
    base, admin = cdn
    u = base + "/co?cc=max-age=60&delay=1.5"   # long enough for all 100 to arrive meanwhile
    results = []

    def one():
        r = requests.get(u, timeout=20)
        results.append((r.status_code, r.text, r.headers.get("X-Cache")))

    threads = [threading.Thread(target=one) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Origin.hits["/co"] == 1
    assert len(results) == 100 and all(s == 200 and t == "/co #1 " for s, t, _ in results)
    assert sum(1 for *_, x in results if x == "MISS") == 1
    assert sum(1 for *_, x in results if x == "HIT") == 99
    assert metric(admin, "edge_cache_coalesced_total") == 99
    # an uncacheable answer: the waiters go on to the origin themselves
    u2 = base + "/nocoal?cc=no-store&delay=0.3"
    results.clear()
    threads = [threading.Thread(target=lambda: results.append(requests.get(u2, timeout=20).status_code))
               for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 5 and Origin.hits["/nocoal"] == 5


def test_coalesced_waiters_that_give_up(cdn):
    base, _ = cdn
    u = base + "/giveup?cc=max-age=60&delay=1"
    out = []

    def patient():
        out.append(requests.get(u, timeout=20).status_code)

    def impatient():
        try:
            requests.get(u, timeout=0.3)
        except requests.RequestException:
            out.append("gave up")

    threads = [threading.Thread(target=patient)] + [threading.Thread(target=impatient) for _ in range(5)] + \
              [threading.Thread(target=patient) for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join()
    assert out.count(200) == 4 and out.count("gave up") == 5
    assert Origin.hits["/giveup"] == 1
    assert get(u).headers["X-Cache"] == "HIT"


def test_ranges_from_the_cache(cdn):
    base, _ = cdn
    u = base + "/rg?cc=max-age=60&size=1000&etag=%22r1%22"
    full = get(u).content
    assert len(full) == 1000
    r = get(u, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.headers["X-Cache"] == "HIT"
    assert r.headers["Content-Range"] == "bytes 10-19/1000" and r.content == full[10:20]
    r = get(u, headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == full[-5:]
    r = get(u, headers={"Range": "bytes=990-"})
    assert r.content == full[990:]
    r = get(u, headers={"Range": "bytes=5000-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == "bytes */1000"
    r = get(u, headers={"Range": "bytes=0-1", "If-Range": '"other"'})
    assert r.status_code == 200 and len(r.content) == 1000
    r = get(u, headers={"Range": "bytes=0-1", "If-Range": '"r1"'})
    assert r.status_code == 206 and r.content == full[:2]
    r = requests.head(u, headers={"Range": "bytes=0-9"}, timeout=5)
    assert r.status_code == 206 and r.content == b""


@pytest.fixture
def cdn_grace(start, tmp_path):
    Origin.hits = {}
    Origin.down = False
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port, admin = free_port(), free_port()
    path = write_stack(tmp_path, f"""\
services:
  cdn:
    role: edge
    listen: ["127.0.0.1:{port}"]
    admin: "127.0.0.1:{admin}"
    routes:
      - {{path: /grace/, backend: origin, cache: {{memory: 1MiB, grace: 30s}}}}
      - {{path: /, backend: origin, cache: {{memory: 1MiB}}}}
    backends:
      origin: {{servers: ["127.0.0.1:{srv.server_address[1]}"]}}
""", name="grace.yaml")
    start(["run", "cdn", "-c", path], name="grace")
    wait_for(lambda: requests.get(f"http://127.0.0.1:{admin}/-/ready", timeout=1).ok, timeout=10,
             what="cdn ready")
    yield f"http://127.0.0.1:{port}", srv
    Origin.down = False
    srv.shutdown()
    srv.server_close()


def test_stale_if_error_and_grace(cdn_grace):
    base, srv = cdn_grace
    sie = base + "/sie?cc=max-age=1,stale-if-error=60"
    plain = base + "/plain?cc=max-age=1"
    mr = base + "/mr?cc=max-age=1,must-revalidate,stale-if-error=60"
    grace = base + "/grace/g?cc=max-age=1"
    for u in (sie, plain, mr, grace):
        assert get(u).status_code == 200
    time.sleep(3.1)  # ages are whole seconds: max-age=2 is surely over
    Origin.down = True      # the origin fails (503)
    r = get(sie)
    assert r.status_code == 200 and r.headers["X-Cache"] == "STALE" and r.text == "/sie #1 "
    r = get(grace)
    assert r.status_code == 200 and r.headers["X-Cache"] == "STALE"
    assert get(plain).status_code == 503            # no allowance: the error shows
    assert get(mr).status_code == 503               # must-revalidate forbids stale


@pytest.fixture
def cdn_text(start, tmp_path):
    """An origin that serves text with a Content-Type, through a cached route."""
    class Text(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        hits = 0

        def log_message(self, *a):
            pass

        def do_GET(self):
            Text.hits += 1
            body = (b"cairn compresses text once and keeps the variants. " * 400)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8" if "notext" not in self.path
                             else "image/png")
            self.send_header("Cache-Control", "max-age=60" + (", no-transform" if "nt" in self.path else ""))
            self.send_header("ETag", '"t1"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Text)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port, _ = start_cdn(start, tmp_path, "cache: {memory: 4MiB}", f'servers: ["127.0.0.1:{srv.server_address[1]}"]')
    yield f"http://127.0.0.1:{port}", Text
    srv.shutdown()
    srv.server_close()


def test_gzip_and_brotli_from_the_cache(cdn_text):
    import gzip
    base, Text = cdn_text
    full = get(base + "/a.txt").content                       # stored (identity)
    raw = requests.get(base + "/a.txt", headers={"Accept-Encoding": "gzip"}, timeout=5, stream=True)
    data = raw.raw.read()
    assert raw.headers["Content-Encoding"] == "gzip" and raw.headers["X-Cache"] == "HIT"
    assert "Accept-Encoding" in raw.headers["Vary"] and raw.headers["ETag"] == '"t1-gzip"'
    assert gzip.decompress(data) == full and len(data) < len(full) // 5
    br = subprocess.run(["curl", "-s", "-H", "Accept-Encoding: br", "-D", "-", "-o", "/dev/null",
                         base + "/a.txt"], capture_output=True, text=True, timeout=10).stdout
    assert "content-encoding: br" in br.lower()
    dec = subprocess.run(["curl", "-s", "--compressed", base + "/a.txt"], capture_output=True, timeout=10).stdout
    assert dec == full
    r = get(base + "/a.txt", headers={"Accept-Encoding": "gzip", "If-None-Match": '"t1-gzip"'})
    assert r.status_code == 304
    r = get(base + "/a.txt", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in r.headers and r.content == full
    assert Text.hits == 1                                      # compressed once, from the cache
    # not for non-text types, nor with no-transform
    get(base + "/notext.png")
    assert "Content-Encoding" not in get(base + "/notext.png", headers={"Accept-Encoding": "gzip"}).headers
    get(base + "/nt.txt")
    assert "Content-Encoding" not in get(base + "/nt.txt", headers={"Accept-Encoding": "gzip"}).headers


def test_stale_while_revalidate(cdn):
    base, _ = cdn
    u = base + "/swr?cc=max-age=2,stale-while-revalidate=30"
    assert get(u).text == "/swr #1 "
    time.sleep(3.1)  # ages are whole seconds: max-age=2 is surely over
    t0 = time.monotonic()
    r = get(u)                  # stale: answered at once, refreshed behind
    assert r.headers["X-Cache"] == "STALE" and r.text == "/swr #1 "
    assert time.monotonic() - t0 < 0.5
    wait_for(lambda: get(u).text == "/swr #2 ", timeout=5, what="background refresh stored")
    r = get(u)
    assert r.headers["X-Cache"] == "HIT" and r.text == "/swr #2 "
    assert Origin.hits["/swr"] == 2
    # with a validator the background request is conditional and a 304 refreshes it
    v = base + "/swr2?cc=max-age=2,stale-while-revalidate=30&etag=%22e%22"
    get(v)
    time.sleep(3.1)  # ages are whole seconds: max-age=2 is surely over
    assert get(v).headers["X-Cache"] == "STALE"
    wait_for(lambda: get(v).headers["X-Cache"] == "HIT", timeout=5, what="refreshed by 304")
    assert get(v).text == "/swr2 #1 " and Origin.hits["/swr2"] == 2


def test_disk_tier_survives_restart(start, tmp_path):
    Origin.hits = {}
    Origin.down = False
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port, admin = free_port(), free_port()
    path = write_stack(tmp_path, f"""\
services:
  cdn:
    role: edge
    listen: ["127.0.0.1:{port}"]
    admin: "127.0.0.1:{admin}"
    routes:
      - {{path: /, backend: origin, cache: {{memory: 1MiB, disk: disk-cache, disk_size: 10MiB}}}}
    backends:
      origin: {{servers: ["127.0.0.1:{srv.server_address[1]}"]}}
""", name="disk.yaml")
    base = f"http://127.0.0.1:{port}"
    try:
        for n in range(2):
            p = start(["run", "cdn", "-c", path], name=f"disk{n}")
            wait_for(lambda: requests.get(f"http://127.0.0.1:{admin}/-/ready", timeout=1).ok, timeout=10,
                     what="ready")
            if n == 0:
                assert get(base + "/d1?cc=max-age=600&size=50000&tag=t").headers["X-Cache"] == "MISS"
                assert get(base + "/d2?cc=max-age=600&vary=Accept-Language",
                           headers={"Accept-Language": "fr"}).headers["X-Cache"] == "MISS"
                assert get(base + "/d3?cc=max-age=600&tag=t").headers["X-Cache"] == "MISS"
                assert requests.post(f"http://127.0.0.1:{admin}/api/cache/purge?url=127.0.0.1:{port}/d3%3Fcc%3Dmax-age%3D600%26tag%3Dt",
                                     timeout=5).json()["purged"] >= 1
            else:
                # a new process: the objects come back from disk
                r = get(base + "/d1?cc=max-age=600&size=50000&tag=t")
                assert r.headers["X-Cache"] == "HIT" and len(r.content) == 50000
                r = get(base + "/d2?cc=max-age=600&vary=Accept-Language", headers={"Accept-Language": "fr"})
                assert r.headers["X-Cache"] == "HIT" and r.text == "/d2 #1 fr"
                r = get(base + "/d2?cc=max-age=600&vary=Accept-Language", headers={"Accept-Language": "de"})
                assert r.headers["X-Cache"] == "MISS"
                assert get(base + "/d3?cc=max-age=600&tag=t").headers["X-Cache"] == "MISS"   # purged
                assert Origin.hits["/d1"] == 1
            p.signal(signal.SIGTERM)
            assert p.wait(timeout=10) == 0
    finally:
        srv.shutdown()
        srv.server_close()


def test_client_reset_while_a_response_streams(cdn):
    """A client that resets its connection while the answer is still streaming from
    the origin: the edge drops the request (no crash, no use after free; the
    sanitizer build reports any) and serves the next clients."""
    import socket
    import struct
    base, admin = cdn
    port = int(base.rsplit(":", 1)[1])
    for i in range(3):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(f"GET /reset{i}?cc=no-store&size=3000000&trickle=30&gap=0.03 HTTP/1.1\r\n"
                  f"Host: x\r\n\r\n".encode())
        got = s.recv(65536)
        assert got.startswith(b"HTTP/1.1 200")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()   # RST: the next write to it fails
    time.sleep(0.5)
    r = get(base + "/after?cc=max-age=60")
    assert r.status_code == 200 and r.text == "/after #1 "
    assert requests.get(admin + "/-/healthy", timeout=5).ok


def _stream_get(url, out, key, **kw):
    """GET with the body read as it comes: records the time of the first body
    byte, the end, X-Cache and the body (or the error that cut it)."""
    try:
        with requests.get(url, stream=True, timeout=20, **kw) as r:
            first, chunks = None, []
            for c in r.iter_content(8192):
                if first is None:
                    first = time.monotonic()
                chunks.append(c)
            out[key] = {"first": first, "end": time.monotonic(), "x": r.headers.get("X-Cache"),
                        "status": r.status_code, "body": b"".join(chunks), "len": r.headers.get("Content-Length")}
    except requests.RequestException as e:
        out[key] = {"error": repr(e), "end": time.monotonic()}


def test_coalesced_waiters_stream_the_object_as_it_arrives(cdn2):
    """Requests that wait for another's fetch get the body while it still arrives
    from the origin (on both worker threads), not after the whole object is in."""
    base, admin = cdn2
    u = base + "/big?cc=max-age=60&size=400000&trickle=8&gap=0.25"    # ~1.75 s to arrive
    out = {}
    filler = threading.Thread(target=_stream_get, args=(u, out, "filler"))
    filler.start()
    time.sleep(0.3)
    waiters = [threading.Thread(target=_stream_get, args=(u, out, i)) for i in range(8)]
    for t in waiters:
        t.start()
    for t in [filler] + waiters:
        t.join()
    assert Origin.hits["/big"] == 1
    f = out["filler"]
    assert f["status"] == 200 and f["x"] == "MISS" and len(f["body"]) == 400000
    for i in range(8):
        w = out[i]
        assert "error" not in w, w
        assert w["status"] == 200 and w["x"] == "HIT" and w["len"] == "400000"
        assert w["body"] == f["body"]
        # the first bytes came long before the origin had sent the last
        assert w["first"] < f["end"] - 0.5, (w["first"] - f["end"])
    assert metric(admin, "edge_cache_coalesced_total") == 8
    assert get(u).headers["X-Cache"] == "HIT"


def test_waiters_finish_when_the_fetching_client_leaves(cdn2):
    """The client whose request fetches the object goes away mid-body: the edge
    fetches on for the requests streaming it, which get all of it, and stores it."""
    import socket
    base, _ = cdn2
    port = int(base.rsplit(":", 1)[1])
    path = "/left?cc=max-age=60&size=300000&trickle=6&gap=0.25"
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    assert s.recv(65536).startswith(b"HTTP/1.1 200")
    out = {}
    waiters = [threading.Thread(target=_stream_get, args=(base + path, out, i)) for i in range(4)]
    for t in waiters:
        t.start()
    time.sleep(0.4)
    s.close()       # the fetching client leaves; the waiters are streaming
    for t in waiters:
        t.join()
    for i in range(4):
        assert "error" not in out[i], out[i]
        assert out[i]["x"] == "HIT" and len(out[i]["body"]) == 300000
        assert out[i]["body"].startswith(b"/left #1 ")
    assert Origin.hits["/left"] == 1
    r = get(base + path)
    assert r.headers["X-Cache"] == "HIT" and r.content == out[0]["body"]


def test_waiters_cut_off_when_the_origin_breaks(cdn2):
    """The origin closes mid-body: every client streaming it sees its connection
    end short of Content-Length (never a short body taken for a whole one), and
    nothing is stored."""
    base, _ = cdn2
    u = base + "/cut?cc=max-age=60&size=300000&cut=100000&trickle=4&gap=0.2"
    out = {}
    threads = [threading.Thread(target=_stream_get, args=(u, out, i)) for i in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert Origin.hits["/cut"] == 1
    for i in range(4):
        # (Debian's urllib3 returns a short body rather than raising)
        assert "error" in out[i] or len(out[i]["body"]) < 300000, out[i]
    r = get(base + "/cut?cc=max-age=60&size=3000")
    assert r.headers["X-Cache"] == "MISS"
    # passed through, not stored: the same (the end arrives with the last bytes,
    # which must not leave the edge waiting for an event that never comes)
    t0 = time.monotonic()
    _stream_get(base + "/cut2?cc=no-store&size=300000&cut=100000&trickle=4&gap=0.2", out, "pass")
    p = out["pass"]
    assert ("error" in p or len(p["body"]) == 100000) and p["end"] - t0 < 5, p


def test_surrogate_control(cdn):
    """Surrogate-Control (W3C Edge Architecture) as CDNs read it: its max-age for
    this cache wins over Cache-Control, no-store wins over everything, directives
    targeted at another device are ignored, and clients never see the header."""
    from urllib.parse import quote
    base, _ = cdn
    r = get(base + "/sc1?cc=max-age=1&sc=" + quote("max-age=3600"))
    assert r.headers["X-Cache"] == "MISS" and "Surrogate-Control" not in r.headers
    assert r.headers["Capability-Seen"] == 'cairn="Surrogate/1.0"'
    time.sleep(2.2)
    r = get(base + "/sc1?cc=max-age=1&sc=" + quote("max-age=3600"))
    assert r.headers["X-Cache"] == "HIT" and "Surrogate-Control" not in r.headers
    for i in range(2):
        r = get(base + "/sc2?cc=max-age=3600&sc=no-store")
        assert r.headers["X-Cache"] == "MISS" and "Surrogate-Control" not in r.headers
    for i in range(2):      # meant for another device: no freshness for us
        assert get(base + "/sc3?sc=" + quote("max-age=3600;other")).headers["X-Cache"] in ("MISS", "EXPIRED")
    get(base + "/sc4?sc=" + quote("max-age=3600;cairn"))
    assert get(base + "/sc4?sc=" + quote("max-age=3600;cairn")).headers["X-Cache"] == "HIT"
    # a downstream surrogate's capability is kept, ours appended
    r = get(base + "/sc5?cc=no-store", headers={"Surrogate-Capability": 'abc="Surrogate/1.0"'})
    assert r.headers["Capability-Seen"] == 'abc="Surrogate/1.0", cairn="Surrogate/1.0"'


def _raw(port, head):
    """One request as the bytes given (Connection: close added); the status, the
    response's fields (lower-cased names) and its body."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"Connection: close\r\n\r\n")
        data = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            data += c
    h, _, body = data.partition(b"\r\n\r\n")
    lines = h.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    return int(lines[0].split()[1]), fields, body


def _h2_get(port, fields):
    """An HTTP/2 (prior knowledge) GET with the given header list sent as is
    (HPACK literals, no Huffman): the response's :status, or "reset" for RST_STREAM."""
    import socket
    import struct

    def frame(t, flags, sid, payload):
        return struct.pack(">I", len(payload))[1:] + bytes([t, flags]) + struct.pack(">I", sid) + payload
    block = b""
    for n, v in fields:
        n, v = n.encode(), v.encode()
        block += b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") + frame(1, 5, 1, block))
        data, deadline = b"", time.monotonic() + 10
        while time.monotonic() < deadline:
            c = s.recv(65536)
            if not c:
                break
            data += c
            off = 0
            while off + 9 <= len(data):         # walk the frames to the HEADERS of stream 1
                ln = int.from_bytes(data[off:off + 3], "big")
                t, sid = data[off + 3], int.from_bytes(data[off + 5:off + 9], "big") & 0x7fffffff
                if off + 9 + ln > len(data):
                    break
                if t == 3 and sid == 1:
                    return "reset"
                if t == 1 and sid == 1:
                    b0 = data[off + 9]          # :status is an indexed field (8..14) from the static table
                    return {0x88: 200, 0x89: 204, 0x8a: 206, 0x8b: 304, 0x8c: 400, 0x8d: 404, 0x8e: 500}.get(b0, b0)
                off += 9 + ln
    raise AssertionError("no HEADERS frame for stream 1")


def test_cache_key_cannot_be_made_to_collide(cdn):
    """The key is the host (lower-cased, trailing dot dropped) and the target as
    received; header tricks neither share nor split an object by accident."""
    base, _ = cdn
    port = int(base.rsplit(":", 1)[1])
    q = "/k?cc=max-age=60"
    st, f, body = _raw(port, f"GET {q} HTTP/1.1\nHost: A.Example\n")
    assert st == 200 and f["x-cache"] == "MISS" and f["host-seen"] == "A.Example"
    # one host however it is spelt in case, or with the root's trailing dot
    for host in ("a.example", "a.EXAMPLE.", "A.Example"):
        st, f, b = _raw(port, f"GET {q} HTTP/1.1\nHost: {host}\n")
        assert (st, f["x-cache"], b) == (200, "HIT", body), host
    # another port, another host: other objects
    for host in ("a.example:81", "b.example", "a.example.b"):
        st, f, _ = _raw(port, f"GET {q} HTTP/1.1\nHost: {host}\n")
        assert f["x-cache"] == "MISS" and f["host-seen"] == host, host
    # fields that name hosts elsewhere change nothing
    st, f, b = _raw(port, f"GET {q} HTTP/1.1\nHost: a.example\nX-Forwarded-Host: b.example\n"
                          f"Forwarded: host=b.example\nX-Host: b.example\n")
    assert (f["x-cache"], b) == ("HIT", body)
    # absolute-form: the target's authority is the host (RFC 9112 3.2.2), for the
    # key and for the origin alike - never the Host field's
    st, f, b = _raw(port, f"GET http://a.example{q} HTTP/1.1\nHost: b.example\n")
    assert (st, f["x-cache"], b) == (200, "HIT", body)
    st, f, _ = _raw(port, f"GET http://c.example/k2?cc=max-age=60 HTTP/1.1\nHost: a.example\n")
    assert f["x-cache"] == "MISS" and f["host-seen"] == "c.example"
    st, f, _ = _raw(port, "GET /k2?cc=max-age=60 HTTP/1.1\nHost: a.example\n")
    assert f["x-cache"] == "MISS" and f["host-seen"] == "a.example"
    # the target is not decoded or normalised: each spelling is its own object
    for t in ("/k%2Fx?cc=max-age=60", "/k/x?cc=max-age=60", "/k/./x?cc=max-age=60",
              "/K/x?cc=max-age=60", "/k/x?cc=max-age=60&", "/k/x?cc=max-age%3D60"):
        st, f, _ = _raw(port, f"GET {t} HTTP/1.1\nHost: a.example\n")
        assert f["x-cache"] == "MISS", t
    # ambiguous hosts are refused before any lookup
    assert _raw(port, f"GET {q} HTTP/1.1\nHost: a.example\nHost: b.example\n")[0] == 400
    assert _raw(port, f"GET {q} HTTP/1.1\nHost: b.example@a.example\n")[0] == 400
    assert _raw(port, f"GET http://u@a.example{q} HTTP/1.1\nHost: a.example\n")[0] == 400
    # over HTTP/2 a Host field must name the :authority, and only once (RFC 9113 8.3.1)
    pseudo = [(":method", "GET"), (":scheme", "http"), (":path", q)]
    assert _h2_get(port, pseudo + [(":authority", "a.example")]) == 200
    assert _h2_get(port, pseudo + [(":authority", "a.example"), ("host", "A.example")]) == 200
    assert _h2_get(port, pseudo + [(":authority", "a.example"), ("host", "b.example")]) == 400
    assert _h2_get(port, pseudo + [(":authority", "a.example"), ("host", "a.example"),
                                   ("host", "b.example")]) in (400, "reset")    # nghttp2 resets it
    assert Origin.hits["/k"] == 4      # A.Example, a.example:81, b.example, a.example.b


def test_purge_needs_the_admin_listener(cdn):
    """Purges are taken on the admin listener only: the same calls on the public
    listener are ordinary requests that the origin answers, and purge nothing."""
    base, admin = cdn
    port = int(base.rsplit(":", 1)[1])
    u = base + "/pp?cc=max-age=60&tag=t1"
    get(u)
    assert get(u).headers["X-Cache"] == "HIT"
    for head in ("POST /api/cache/purge?all=1 HTTP/1.1\nHost: x\nContent-Length: 0\n",
                 "POST /api/cache/purge?tag=t1 HTTP/1.1\nHost: x\nContent-Length: 0\n",
                 "PURGE /pp?cc=max-age=60&tag=t1 HTTP/1.1\nHost: 127.0.0.1:%d\n" % port):
        st, f, body = _raw(port, head)
        assert b"purged" not in body, head
    assert get(u).headers["X-Cache"] == "HIT"
    assert Origin.hits["/pp"] == 1
    assert requests.post(admin + "/api/cache/purge?tag=t1", timeout=5).json()["purged"] == 1
    assert get(u).headers["X-Cache"] == "MISS"


class BadOrigin:
    """A raw origin: while `bad` is set, each path gets its own broken response;
    then a good one (max-age=60) with the path and a counter in the body."""

    BROKEN = {
        "/two-lengths": b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 5\r\n"
                        b"Content-Length: 6\r\n\r\nhello!",
        "/short": b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 100\r\n\r\n"
                  b"only ten.\n",
        "/bad-chunk": b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"5\r\nhello\r\nzz\r\nxx\r\n0\r\n\r\n",
        "/cut-chunked": b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5\r\nhello\r\n",
        "/not-http": b"HTTX/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\n\r\nok",
        "/te-and-cl": b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 3\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "/obs-fold": b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
        "/status-999": b"HTTP/1.1 999 What\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\n\r\nok",
        "/bad-field": b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nBad Field: x\r\nContent-Length: 2\r\n\r\nok",
        "/huge-head": b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nX-Big: " + b"a" * 200000 +
                      b"\r\nContent-Length: 2\r\n\r\nok",
        "/too-big": b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 70000\r\n\r\n" +
                    b"b" * 70000,
    }

    def __init__(self):
        import socket
        self.bad, self.count = True, {}
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self.one, args=(c,), daemon=True).start()

    # a good answer followed by bytes that look like a second one, on a connection
    # kept open: an edge that reused it as it is would take them for the next answer
    SPLIT = (b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\n\r\nok"
             b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 4\r\n\r\nEVIL")

    def one(self, c):
        with c:
            data = b""
            while True:             # keep-alive until a broken answer
                while b"\r\n\r\n" not in data:
                    d = c.recv(65536)
                    if not d:
                        return
                    data += d
                head, _, data = data.partition(b"\r\n\r\n")
                path = head.split(b" ")[1].decode().split("?")[0]
                self.count[path] = self.count.get(path, 0) + 1
                if self.bad and path in self.BROKEN:
                    try:
                        c.sendall(self.BROKEN[path])
                    except OSError:
                        pass
                    return          # and close
                if path == "/split":
                    c.sendall(self.SPLIT)
                    continue
                body = f"good {path} #{self.count[path]}".encode()
                c.sendall(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def close(self):
        self.ls.close()


def test_malformed_origin_responses_are_never_stored(start, tmp_path):
    """Each kind of broken origin response reaches the client as an error (or a
    connection cut short of its length) and leaves nothing in the cache: once the
    origin mends, the next request is a MISS that stores the good answer."""
    origin = BadOrigin()
    port, admin = start_cdn(start, tmp_path, "cache: {memory: 1MiB, max_object: 64KiB}",
                            f'servers: ["127.0.0.1:{origin.port}"]')   # default retries and ejection
    try:
        for p in BadOrigin.BROKEN:
            for _ in range(2):
                try:
                    st, f, body = _raw(port, f"GET {p} HTTP/1.1\nHost: x\n")
                except OSError:
                    continue    # reset mid-response: fine, nothing may be stored
                if p == "/too-big":     # passed through whole, never stored
                    assert st == 200 and f["x-cache"] == "MISS" and len(body) == 70000, p
                elif st == 200:         # the head went out before the body broke
                    assert f.get("x-cache") == "MISS" and len(body) < int(f.get("content-length", 10**9)) \
                        or f.get("transfer-encoding") == "chunked" and not body.endswith(b"0\r\n\r\n"), (p, f, body)
                else:
                    assert st == 502 and f.get("x-cache") != "HIT", (p, st)
        origin.bad = False
        for p in BadOrigin.BROKEN:
            st, f, body = _raw(port, f"GET {p} HTTP/1.1\nHost: x\n")
            assert (st, f["x-cache"]) == (200, "MISS") and body.startswith(b"good " + p.encode()), p
            st, f, body2 = _raw(port, f"GET {p} HTTP/1.1\nHost: x\n")
            assert (st, f["x-cache"], body2) == (200, "HIT", body), p
        # bytes after a complete answer are never read as the next request's answer
        for _ in range(3):
            st, f, body = _raw(port, "GET /split HTTP/1.1\nHost: x\n")
            assert (st, body) == (200, b"ok")
            st, f, body = _raw(port, f"GET /after-split-{_} HTTP/1.1\nHost: x\n")
            assert (st, f["x-cache"], body) == (200, "MISS", f"good /after-split-{_} #1".encode())
        assert requests.get(f"http://127.0.0.1:{admin}/-/healthy", timeout=5).ok
    finally:
        origin.close()


def test_stale_while_revalidate_over_tls_with_route_headers(start, tmp_path):
    """The background refresh speaks to a TLS origin as the proxy does (CA, SNI)
    and sends what a proxied request would: the route's request_headers changes (a
    Host override included), the forwarding fields, Surrogate-Capability."""
    import ssl
    Origin.hits, Origin.seen, Origin.down = {}, {}, False
    cert, key = make_cert(tmp_path, "origin.test")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port, admin = start_cdn(start, tmp_path, 'cache: {memory: 1MiB}, request_headers: '
                            '{set: {Host: origin.internal, X-Edge: "1"}, remove: [X-Drop]}',
                            f'servers: ["127.0.0.1:{srv.server_address[1]}"], '
                            'tls: {ca: origin.test.pem, sni: origin.test}')
    try:
        base = f"http://127.0.0.1:{port}"
        u = base + "/tswr?cc=max-age=2,stale-while-revalidate=30"
        h = {"X-Drop": "secret", "X-Keep": "k"}
        assert get(u, headers=h).text == "/tswr #1 "
        time.sleep(3.1)  # ages are whole seconds: max-age=2 is surely over
        r = get(u, headers=h)
        assert r.headers["X-Cache"] == "STALE" and r.text == "/tswr #1 "
        wait_for(lambda: get(u).text == "/tswr #2 ", timeout=5, what="background refresh over TLS")
        assert Origin.hits["/tswr"] == 2
        for seen in Origin.seen["/tswr"]:       # the proxied request, then the background one
            assert seen.get("Host") == "origin.internal" and seen.get("X-Edge") == "1", seen
            assert "X-Drop" not in seen and seen.get("X-Keep") == "k", seen
            assert 'cairn="Surrogate/1.0"' in seen.get("Surrogate-Capability", ""), seen
            assert seen.get("X-Forwarded-Proto") == "http" and seen.get("X-Forwarded-For") == "127.0.0.1", seen
            assert seen.get("X-Forwarded-Host") == f"127.0.0.1:{port}" and seen.get("X-Request-Id"), seen
        assert "If-None-Match" not in Origin.seen["/tswr"][1]     # no validator on this object
    finally:
        srv.shutdown()
        srv.server_close()
