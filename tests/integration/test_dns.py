"""The dns role with real clients: dnspython, dig, raw sockets; GSLB members are
real demo-app processes on loopback addresses."""
import os
import shutil
import signal
import socket
import struct
import subprocess
import time

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest
import requests

from conftest import free_port, wait_for, write_stack

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def q(port, name, rdtype="A", tcp=False, **kw):
    m = dns.message.make_query(name, rdtype, **kw)
    m.flags &= ~dns.flags.RD
    if tcp:
        return dns.query.tcp(m, "127.0.0.1", port=port, timeout=3)
    return dns.query.udp(m, "127.0.0.1", port=port, timeout=3)


def addrs(r):
    return sorted(x.to_text() for rr in r.answer for x in rr)


def raw_udp(port, payload, timeout=1.0):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(payload, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except socket.timeout:
            return None


def copy_zone(tmp_path):
    for f in ("example.test.zone", "example.test.inc"):
        shutil.copy(os.path.join(DATA, f), tmp_path / f)


def dns_stack(tmp_path, port, admin, extra="", zone='allow_transfer: ["127.0.0.1/32"]'):
    copy_zone(tmp_path)
    return write_stack(tmp_path, f"""
services:
  dns:
    role: dns
    listen: ["127.0.0.1:{port}"]
    admin: "127.0.0.1:{admin}"
    zones:
      - {{origin: example.test, file: example.test.zone, {zone}}}
{extra}
""")


def start_dns(start, stack, port, name="dns"):
    p = start(["run", "dns", "-c", stack], name=name)

    def up():
        # a query sent before the socket is bound is lost (no ICMP error reaches an
        # unconnected socket), so each try waits briefly
        m = dns.message.make_query("example.test.", "SOA")
        try:
            return dns.query.udp(m, "127.0.0.1", port=port, timeout=0.2).rcode() == dns.rcode.NOERROR
        except dns.exception.Timeout:
            return False
    wait_for(lambda: p.p.poll() is not None or up(), what="dns ready")
    assert p.p.poll() is None, p.stderr()
    return p


@pytest.fixture
def server(start, tmp_path):
    port, admin = free_port(), free_port()
    stack = dns_stack(tmp_path, port, admin)
    p = start_dns(start, stack, port)
    yield p, port, admin, tmp_path
    # a clean stop: exit code 0 (under ASan a leak or an error would change it)
    p.signal(signal.SIGTERM)
    assert p.wait(10) == 0, p.stderr()
    assert "ERROR" not in p.stderr()


# ---- EDNS, truncation, malformed packets ----

def test_edns_badvers_and_do_bit(server):
    _, port, _, _ = server
    m = dns.message.make_query("www.example.test.", "A")
    m.use_edns(edns=1)
    r = dns.query.udp(m, "127.0.0.1", port=port, timeout=3)
    assert r.rcode() == dns.rcode.BADVERS
    assert r.edns == 0 and not r.answer
    r = q(port, "www.example.test.", use_edns=0, want_dnssec=True)
    assert r.ednsflags & dns.flags.DO
    assert r.payload == 1232


def test_truncation_and_tcp_fallback(server):
    _, port, _, _ = server
    r = q(port, "big.example.test.", "TXT", use_edns=False)
    assert r.flags & dns.flags.TC
    full = q(port, "big.example.test.", "TXT", tcp=True, use_edns=False)
    assert not full.flags & dns.flags.TC
    assert len(list(full.answer[0])) == 6
    m = dns.message.make_query("big.example.test.", "TXT", use_edns=False)
    r, used_tcp = dns.query.udp_with_fallback(m, "127.0.0.1", port=port, timeout=3)
    assert used_tcp and len(list(r.answer[0])) == 6
    # a big enough EDNS buffer gets it over UDP
    r = q(port, "big.example.test.", "TXT", use_edns=0, payload=1232)
    assert not r.flags & dns.flags.TC and len(list(r.answer[0])) == 6


def test_tcp_pipelining(server):
    _, port, _, _ = server
    msgs = [dns.message.make_query(n, "A") for n in ("web.example.test.", "mail.example.test.",
                                                    "nope.example.test.")]
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(b"".join(struct.pack("!H", len(w)) + w for w in (m.to_wire() for m in msgs)))
        got = []
        buf = b""
        while len(got) < 3:
            chunk = s.recv(65535)
            assert chunk, "connection closed early"
            buf += chunk
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                n = struct.unpack("!H", buf[:2])[0]
                got.append(dns.message.from_wire(buf[2:2 + n]))
                buf = buf[2 + n:]
    assert [m.id for m in got] == [m.id for m in msgs]
    assert got[2].rcode() == dns.rcode.NXDOMAIN


def header(id_=0x1234, flags=0, qd=1, an=0, ns=0, ar=0):
    return struct.pack("!HHHHHH", id_, flags, qd, an, ns, ar)


def test_malformed_packets(server):
    p, port, _, _ = server
    good_q = b"\x03www\x07example\x04test\x00" + struct.pack("!HH", 1, 1)
    # too short to answer: dropped
    assert raw_udp(port, b"\x12\x34\x00", 0.3) is None
    # a response is never answered
    assert raw_udp(port, header(flags=0x8000) + good_q, 0.3) is None
    cases = {
        "two questions": header(qd=2) + good_q + good_q,
        "no question": header(qd=0),
        "label past the end": header() + b"\x3fabc",
        "compression loop": header() + b"\xc0\x0c" + struct.pack("!HH", 1, 1),
        "forward pointer": header() + b"\xc0\x20" + struct.pack("!HH", 1, 1) + b"\x00" * 20,
        "bad label type": header() + b"\x80abc\x00" + struct.pack("!HH", 1, 1),
        "truncated question": header() + b"\x03www\x00\x00",
        "wrong answer count": header(an=5) + good_q,
        "two OPT records": header(ar=2) + good_q + (b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00") * 2,
        "ECS with bad family": header(ar=1) + good_q + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x08"
                               + b"\x00\x08\x00\x04\x00\x07\x18\x00",
    }
    for what, pkt in cases.items():
        r = raw_udp(port, pkt)
        assert r is not None, what
        assert r[:2] == b"\x12\x34", what
        assert r[2] & 0x80, what
        assert r[3] & 0x0f == dns.rcode.FORMERR, what
    # an opcode we do not implement
    r = raw_udp(port, header(flags=2 << 11) + good_q)
    assert r is not None and r[3] & 0x0f == dns.rcode.NOTIMP
    # still serving
    assert addrs(q(port, "web.example.test.")) == ["192.0.2.80", "192.0.2.81"]
    assert p.p.poll() is None


def test_ecs_echoed_with_scope_zero_for_static_names(server):
    _, port, _, _ = server
    ecs = dns.edns.ECSOption("198.51.100.0", 24)
    r = q(port, "web.example.test.", use_edns=0, options=[ecs])
    opts = [o for o in r.options if o.otype == dns.edns.ECS]
    assert len(opts) == 1
    assert opts[0].address == "198.51.100.0" and opts[0].srclen == 24 and opts[0].scopelen == 0


def test_axfr_and_refusal(server, tmp_path):
    _, port, _, _ = server
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "example.test.", "AXFR"],
                         capture_output=True, text=True, timeout=20).stdout
    recs = [ln for ln in out.splitlines() if ln and not ln.startswith(";")]
    assert recs[0].split()[3] == "SOA" and recs[-1].split()[3] == "SOA"
    assert len(recs) == 91 + 1      # every record plus the closing SOA
    assert any("192.0.2.150" in ln for ln in recs)      # glue is part of the zone
    # a name that is not a zone apex
    r = dns.query.tcp(dns.message.make_query("www.example.test.", "AXFR"), "127.0.0.1",
                      port=port, timeout=3)
    assert r.rcode() == dns.rcode.NOTAUTH


def ixfr_query(serial):
    m = dns.message.make_query("example.test.", "IXFR")
    m.authority.append(dns.rrset.from_text(
        "example.test.", 0, "IN", "SOA", f"ns1.example.test. hostmaster.example.test. {serial} 7200 3600 1209600 300"))
    return m


def test_ixfr(server):
    """IXFR (RFC 1995) without a history: a client at the current serial (or a later
    one, RFC 1982 arithmetic) gets the single SOA; an older one the whole zone over TCP,
    AXFR-style; over UDP always the single SOA (ask again over TCP)."""
    _, port, _, _ = server
    for serial, tcp_records in ((2026112500, 91 + 1), (2026112601, 1), (2026112700, 1),
                                (4294967295, 91 + 1),    # "older" than 2026112601 after wrap-around
                                (2026112601 + 2**31 - 1, 1)):
        r = dns.query.udp(ixfr_query(serial), "127.0.0.1", port=port, timeout=3)
        assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA, serial
        assert [rr.rdtype for rr in r.answer] == [dns.rdatatype.SOA] and r.answer[0][0].serial == 2026112601
        # over TCP: the messages of the transfer, counted as records (dig prints them)
        out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "example.test.", f"IXFR={serial}"],
                             capture_output=True, text=True, timeout=20).stdout
        recs = [ln for ln in out.splitlines() if ln and not ln.startswith(";")]
        assert len(recs) == tcp_records, (serial, out)
        assert recs[0].split()[3] == "SOA" and "2026112601" in recs[0]
    # what a secondary does with it: dnspython builds the zone from the answer
    z = dns.zone.from_xfr(dns.query.xfr("127.0.0.1", "example.test.", port=port, rdtype="IXFR",
                                        serial=2026112500))
    assert z.get_rdataset("www", "CNAME") is not None


def test_axfr_refused_without_permission(start, tmp_path):
    port, admin = free_port(), free_port()
    copy_zone(tmp_path)
    stack = write_stack(tmp_path, f"""
services:
  dns:
    role: dns
    listen: ["127.0.0.1:{port}"]
    admin: "127.0.0.1:{admin}"
    zones: [{{origin: example.test, file: example.test.zone}}]
""")
    start_dns(start, stack, port)
    r = dns.query.tcp(dns.message.make_query("example.test.", "AXFR"), "127.0.0.1", port=port,
                      timeout=3)
    assert r.rcode() == dns.rcode.REFUSED
    for q in (dns.query.udp, dns.query.tcp):    # IXFR likewise, whatever the serial
        assert q(ixfr_query(2026112601), "127.0.0.1", port=port, timeout=3).rcode() == dns.rcode.REFUSED
    m = requests.get(f"http://127.0.0.1:{admin}/metrics", timeout=3).text
    assert 'dns_zone_transfers_total{result="refused"} 2' in m     # AXFR and IXFR over TCP


# ---- reload, NOTIFY ----

def bump_serial(path, serial, extra=""):
    text = open(path).read().replace("2026112601", str(serial))
    open(path, "w").write(text + extra)


def test_reload_and_notify(start, tmp_path):
    port, admin = free_port(), free_port()
    sec = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sec.bind(("127.0.0.1", 0))
    sec.settimeout(5)
    sec_port = sec.getsockname()[1]
    stack = dns_stack(tmp_path, port, admin, zone=f'secondaries: ["127.0.0.1:{sec_port}"]')
    p = start_dns(start, stack, port)
    try:
        # NOTIFY at start; answer it like a secondary would
        data, src = sec.recvfrom(512)
        n = dns.message.from_wire(data)
        assert n.opcode() == dns.opcode.NOTIFY and n.flags & dns.flags.AA
        assert n.question[0].rdtype == dns.rdatatype.SOA
        sec.sendto(dns.message.make_response(n).to_wire(), src)
        # the secondary may transfer the zone
        out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "example.test.", "AXFR"],
                             capture_output=True, text=True, timeout=20).stdout
        assert "192.0.2.150" in out
        # a new serial and a new name: SIGHUP swaps the zone and notifies again
        bump_serial(tmp_path / "example.test.zone", 2026112602, "fresh IN A 192.0.2.222\n")
        p.signal(signal.SIGHUP)
        wait_for(lambda: addrs(q(port, "fresh.example.test.")) == ["192.0.2.222"],
                 what="reloaded zone")
        data, src = sec.recvfrom(512)
        n = dns.message.from_wire(data)
        assert n.answer[0][0].serial == 2026112602
        sec.sendto(dns.message.make_response(n).to_wire(), src)
        wait_for(lambda: 'dns_notify_total{result="acked"} 2' in
                 requests.get(f"http://127.0.0.1:{admin}/metrics", timeout=3).text,
                 what="notify acked")
        # a broken zone is refused with file:line; the old one keeps serving
        with open(tmp_path / "example.test.zone", "a") as f:
            f.write("broken IN A 300.1.2.3\n")
        r = requests.post(f"http://127.0.0.1:{admin}/-/reload", timeout=5)
        assert r.status_code == 400
        nlines = len(open(tmp_path / "example.test.zone").read().splitlines())
        assert f"example.test.zone:{nlines}: A: bad IPv4 address" in r.text
        assert addrs(q(port, "fresh.example.test.")) == ["192.0.2.222"]
        z = requests.get(f"http://127.0.0.1:{admin}/api/zones", timeout=3).json()
        assert z["zones"][0]["serial"] == 2026112602
        assert p.p.poll() is None
        p.signal(signal.SIGTERM)
        assert p.wait(10) == 0, p.stderr()
    finally:
        sec.close()


def test_bad_zone_fails_start_with_location(start, tmp_path):
    port = free_port()
    (tmp_path / "bad.zone").write_text("$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 1.2.3\n")
    stack = write_stack(tmp_path, f"""
services:
  dns:
    role: dns
    listen: ["127.0.0.1:{port}"]
    zones: [{{origin: bad.test, file: bad.zone}}]
""")
    p = start(["run", "dns", "-c", stack])
    assert p.wait(10) == 1
    assert "bad.zone:4: A: bad IPv4 address" in p.stderr()


def test_check_reports_config_errors(tmp_path):
    stack = write_stack(tmp_path, """
services:
  dns:
    role: dns
    listen: ["127.0.0.1:5399"]
    zones: [{origin: a.test, fil: x}]
    gslb:
      - name: app.a.test
        policy: closest
        pools: [{members: ["not-an-ip"]}]
""")
    from conftest import run_cairn
    r = run_cairn(["check", "-c", stack])
    assert r.returncode == 2
    assert "services.dns.zones[0]: unknown key \"fil\"" in r.stderr
    assert "services.dns.gslb[0].policy: expected failover, weighted or nearest" in r.stderr
    assert "services.dns.gslb[0].pools[0].members[0]: expected an IPv4 or IPv6 address" in r.stderr


# ---- RRL ----

def test_rrl_drops_and_slips(start, tmp_path):
    port, admin = free_port(), free_port()
    stack = dns_stack(tmp_path, port, admin, """    rrl: {rate: 5, slip: 2}
""")
    start_dns(start, stack, port)
    pkt = dns.message.make_query("web.example.test.", "A", use_edns=False)
    answered = truncated = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        for i in range(60):
            pkt.id = i
            s.sendto(pkt.to_wire(), ("127.0.0.1", port))
        while True:
            try:
                r = dns.message.from_wire(s.recv(4096))
            except socket.timeout:
                break
            if r.flags & dns.flags.TC:
                truncated += 1
                assert not r.answer
            else:
                answered += 1
    assert 5 <= answered <= 10        # the burst, plus what refills during the test
    assert truncated >= 20            # every second limited response slips
    assert answered + truncated < 60  # the rest are dropped
    m = requests.get(f"http://127.0.0.1:{admin}/metrics", timeout=3).text
    assert 'dns_rrl_limited_total{action="dropped"}' in m
    # TCP is never limited
    assert addrs(q(port, "web.example.test.", tcp=True)) == ["192.0.2.80", "192.0.2.81"]


# ---- GSLB with real members ----

def start_app(start, tmp_path, ip, port):
    stack = write_stack(tmp_path, f"""
services:
  app:
    role: demo-app
    listen: ["{ip}:{port}"]
""", name=f"app-{ip}.yaml")
    p = start(["run", "app", "-c", stack], name=f"app-{ip}")
    wait_for(lambda: requests.get(f"http://{ip}:{port}/healthz", timeout=1).ok,
             what=f"demo-app on {ip}")
    return p


def gslb_stack(tmp_path, port, admin, app_port):
    copy_zone(tmp_path)
    health = f"health: {{http: {{port: {app_port}, path: /healthz}}, interval: 200ms, timeout: 150ms, rise: 2, fall: 2}}"
    return write_stack(tmp_path, f"""
services:
  dns:
    role: dns
    listen: ["127.0.0.1:{port}"]
    admin: "127.0.0.1:{admin}"
    zones: [{{origin: example.test, file: example.test.zone}}]
    gslb:
      - name: app.example.test
        ttl: 5s
        policy: failover
        {health}
        pools:
          - region: eu
            networks: ["10.1.0.0/16"]
            members: [{{address: 127.0.0.2}}, {{address: 127.0.0.3}}]
          - region: us
            networks: ["10.2.0.0/16"]
            members: [127.0.0.4]
      - name: near.example.test
        policy: nearest
        {health}
        pools:
          - region: eu
            networks: ["10.1.0.0/16"]
            members: [127.0.0.2, 127.0.0.3]
          - region: us
            networks: ["10.2.0.0/16", "2001:db8:2::/48"]
            members: [127.0.0.4]
      - name: down.example.test
        policy: failover
        {health}
        pools: [{{members: [127.0.0.5, 127.0.0.6]}}]
      - name: mixed.example.test
        {health}
        pools: [{{members: [127.0.0.2, 127.0.0.5]}}]
      - name: closed.example.test
        when_all_down: servfail
        {health}
        pools: [{{members: [127.0.0.5]}}]
      - name: weighted.example.test
        policy: weighted
        max_answers: 1
        {health}
        pools: [{{members: [{{address: 127.0.0.2, weight: 9}}, {{address: 127.0.0.4, weight: 1}}]}}]
""")


def test_gslb_health_failover_and_nearest(start, tmp_path):
    app_port, port, admin = free_port(), free_port(), free_port()
    apps = {ip: start_app(start, tmp_path, ip, app_port)
            for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4")}
    stack = gslb_stack(tmp_path, port, admin, app_port)
    t0 = time.monotonic()
    d = start_dns(start, stack, port)
    # the first answer already honours the first round of checks: .5 and .6
    # never answered a check, yet the name answers (fail open) with them only
    # because every member is down
    assert addrs(q(port, "app.example.test.")) == ["127.0.0.2", "127.0.0.3"]
    assert addrs(q(port, "down.example.test.")) == ["127.0.0.5", "127.0.0.6"]
    # .5 failed its first check before the socket was read, so it is never answered
    assert all(addrs(q(port, "mixed.example.test.")) == ["127.0.0.2"] for _ in range(5))
    assert q(port, "closed.example.test.").rcode() == dns.rcode.SERVFAIL
    # AAAA: no IPv6 members, so NODATA with the SOA
    r = q(port, "app.example.test.", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer and r.authority
    r = q(port, "app.example.test.")
    assert r.answer[0].ttl == 5 and r.flags & dns.flags.AA
    # nearest: by EDNS Client Subnet, with the source prefix as scope
    ecs = dns.edns.ECSOption("10.2.3.0", 24)
    r = q(port, "near.example.test.", use_edns=0, options=[ecs])
    assert addrs(r) == ["127.0.0.4"]
    opt = [o for o in r.options if o.otype == dns.edns.ECS][0]
    assert opt.scopelen == 24
    r = q(port, "near.example.test.", use_edns=0, options=[dns.edns.ECSOption("10.1.7.0", 24)])
    assert addrs(r) == ["127.0.0.2", "127.0.0.3"]
    # no ECS: the source 127.0.0.1 is in no region's networks, so the first region
    assert addrs(q(port, "near.example.test.")) == ["127.0.0.2", "127.0.0.3"]
    # weighted, one answer: mostly the weight-9 member
    seen = [addrs(q(port, "weighted.example.test."))[0] for _ in range(200)]
    assert 140 <= seen.count("127.0.0.2") <= 199 and seen.count("127.0.0.4") >= 1

    # stop one eu member: it leaves the answers within fall x interval (+ slack)
    apps["127.0.0.2"].signal(signal.SIGTERM)
    apps["127.0.0.2"].wait(10)
    t_stop = time.monotonic()
    wait_for(lambda: addrs(q(port, "app.example.test.")) == ["127.0.0.3"], timeout=3,
             what="member .2 leaves the answers")
    assert time.monotonic() - t_stop < 2 * 0.2 + 0.15 + 1.0
    # stop the whole eu region: answers fail over to us
    apps["127.0.0.3"].signal(signal.SIGTERM)
    apps["127.0.0.3"].wait(10)
    wait_for(lambda: addrs(q(port, "app.example.test.")) == ["127.0.0.4"], timeout=3,
             what="failover to us")
    # nearest for an eu client whose region is down: the next region
    r = q(port, "near.example.test.", use_edns=0, options=[dns.edns.ECSOption("10.1.7.0", 24)])
    assert addrs(r) == ["127.0.0.4"]

    # state in the admin API and in metrics
    st = requests.get(f"http://127.0.0.1:{admin}/api/gslb", timeout=3).json()
    app = [n for n in st["names"] if n["name"] == "app.example.test"][0]
    states = {m["address"]: m["state"] for p in app["pools"] for m in p["members"]}
    assert states == {"127.0.0.2": "down", "127.0.0.3": "down", "127.0.0.4": "up"}
    m = requests.get(f"http://127.0.0.1:{admin}/metrics", timeout=3).text
    assert 'dns_gslb_member_up{name="app.example.test",region="us",member="127.0.0.4"} 1' in m
    assert 'dns_gslb_member_up{name="app.example.test",region="eu",member="127.0.0.2"} 0' in m

    # one check per member however many names share it: .4 is named by three
    # names but its demo-app saw about one /healthz per interval
    elapsed = time.monotonic() - t0
    mt = requests.get(f"http://127.0.0.4:{app_port}/metrics", timeout=3).text
    checks = sum(float(ln.split()[-1]) for ln in mt.splitlines()
                 if ln.startswith("demo_http_requests_total") and 'route="/healthz"' in ln)
    assert 0 < checks <= elapsed / 0.2 + 3, (checks, elapsed)

    # bring .2 back: it returns after `rise` good checks
    apps["127.0.0.2"] = start_app(start, tmp_path, "127.0.0.2", app_port)
    wait_for(lambda: addrs(q(port, "app.example.test.")) == ["127.0.0.2"], timeout=5,
             what="member .2 back")
    d.signal(signal.SIGTERM)
    assert d.wait(10) == 0, d.stderr()


def test_threads_and_reload_swap(start, tmp_path):
    """Two worker threads each with their own sockets; a reload reaches both."""
    port, admin = free_port(), free_port()
    stack = dns_stack(tmp_path, port, admin, "    threads: 2\n")
    p = start_dns(start, stack, port)

    def all_answers(name):
        # new sockets (new source ports) spread over both threads' sockets
        return {tuple(addrs(q(port, name))) for _ in range(40)}
    assert all_answers("web.example.test.") == {("192.0.2.80", "192.0.2.81")}
    bump_serial(tmp_path / "example.test.zone", 2026112605, "fresh IN A 192.0.2.9\n")
    r = requests.post(f"http://127.0.0.1:{admin}/-/reload", timeout=5)
    assert r.status_code == 200
    wait_for(lambda: all_answers("fresh.example.test.") == {("192.0.2.9",)}, what="both threads")
    assert requests.get(f"http://127.0.0.1:{admin}/api/zones", timeout=3).json()["generation"] == 2
    p.signal(signal.SIGTERM)
    assert p.wait(10) == 0, p.stderr()


def test_ipv6_listener(start, tmp_path):
    port, admin = free_port(), free_port()
    copy_zone(tmp_path)
    stack = write_stack(tmp_path, f"""
services:
  dns:
    role: dns
    listen: ["127.0.0.1:{port}", "[::1]:{port}"]
    admin: "127.0.0.1:{admin}"
    zones: [{{origin: example.test, file: example.test.zone}}]
""")
    p = start_dns(start, stack, port)
    m = dns.message.make_query("web.example.test.", "AAAA")
    r = dns.query.udp(m, "::1", port=port, timeout=3)
    assert [x.to_text() for x in r.answer[0]] == ["2001:db8::80"]
    r = dns.query.tcp(m, "::1", port=port, timeout=3)
    assert [x.to_text() for x in r.answer[0]] == ["2001:db8::80"]
    p.signal(signal.SIGTERM)
    assert p.wait(10) == 0, p.stderr()


def test_gslb_nearest_by_maxmind_database(start, tmp_path):
    """geoip: a MaxMind database (written here to the published format and read back
    by Debian's mmdblookup) maps clients to countries and continents; `nearest` picks
    the pool listing the client's country, else its continent, after `networks`."""
    import mmdb
    db = tmp_path / "geo.mmdb"
    mmdb.write(str(db), [
        ("10.1.0.0/16", {"country": {"iso_code": "DE"}, "continent": {"code": "EU"}}),
        ("10.2.0.0/16", {"country": {"iso_code": "JP"}, "continent": {"code": "AS"}}),
        ("10.3.0.0/16", {"country": {"iso_code": "AT"}, "continent": {"code": "EU"}}),
        ("10.4.0.0/16", {"registered_country": {"iso_code": "US"}, "continent": {"code": "NA"}}),
        ("2001:db8:5::/48", {"country": {"iso_code": "FR"}, "continent": {"code": "EU"}}),
    ])
    out = subprocess.run(["mmdblookup", "--file", str(db), "--ip", "10.3.1.1", "country", "iso_code"],
                         capture_output=True, text=True)
    assert '"AT"' in out.stdout, out
    port, admin = free_port(), free_port()
    copy_zone(tmp_path)
    stack = write_stack(tmp_path, f"""
services:
  dns:
    role: dns
    listen: ["127.0.0.1:{port}"]
    admin: "127.0.0.1:{admin}"
    geoip: geo.mmdb
    zones: [{{origin: example.test, file: example.test.zone}}]
    gslb:
      - name: geo.example.test
        policy: nearest
        pools:
          - region: asia
            countries: [jp]
            members: [127.0.0.9]
          - region: de
            countries: [DE, FR]
            members: [127.0.0.2]
          - region: europe
            continents: [EU]
            members: [127.0.0.3]
          - region: us
            networks: ["10.9.0.0/16"]
            countries: [US]
            members: [127.0.0.4]
""")
    d = start_dns(start, stack, port)

    def near(subnet, plen=24):
        r = q(port, "geo.example.test.", use_edns=0, options=[dns.edns.ECSOption(subnet, plen)])
        opt = [o for o in r.options if o.otype == dns.edns.ECS][0]
        return addrs(r), opt.scopelen
    assert near("10.1.4.0") == (["127.0.0.2"], 24)        # DE: its country's pool
    assert near("10.2.4.0") == (["127.0.0.9"], 24)        # JP
    assert near("10.3.4.0") == (["127.0.0.3"], 24)        # AT: not listed, its continent EU
    assert near("10.4.4.0") == (["127.0.0.4"], 24)        # registered country US
    assert near("2001:db8:5::", 48) == (["127.0.0.2"], 48)  # FR over IPv6
    assert near("10.9.1.0") == (["127.0.0.4"], 24)        # networks come first
    # unknown to the database and to every network: the first region
    assert near("10.7.0.0") == (["127.0.0.9"], 24)
    # no ECS: the source address 127.0.0.1 is in none
    assert addrs(q(port, "geo.example.test.")) == ["127.0.0.9"]
    d.signal(signal.SIGTERM)
    assert d.wait(10) == 0, d.stderr()


def test_geoip_config_errors(tmp_path):
    from conftest import run_cairn
    (tmp_path / "bad.mmdb").write_bytes(b"not a database")
    stack = write_stack(tmp_path, """
services:
  dns:
    role: dns
    listen: ["127.0.0.1:5399"]
    geoip: bad.mmdb
    zones: [{origin: a.test}]
    gslb:
      - name: app.a.test
        policy: nearest
        pools: [{countries: [DEU], members: [127.0.0.1]}]
""")
    r = run_cairn(["check", "-c", stack])
    assert r.returncode == 2
    assert "services.dns.geoip: " in r.stderr and "bad.mmdb" in r.stderr
    assert "expected two-letter ISO 3166 country codes, got \"DEU\"" in r.stderr
    stack = write_stack(tmp_path, """
services:
  dns:
    role: dns
    listen: ["127.0.0.1:5399"]
    zones: [{origin: a.test}]
    gslb:
      - name: app.a.test
        policy: nearest
        pools: [{continents: [EU], members: [127.0.0.1]}]
""", name="s2.yaml")
    r = run_cairn(["check", "-c", stack])
    assert r.returncode == 2
    assert "countries and continents need the service's geoip: database" in r.stderr


# ---- a real secondary ----

KNOTD = shutil.which("knotd") or "/usr/sbin/knotd"


def test_knot_secondary_follows_notify_axfr_and_ixfr(start, tmp_path):
    """Debian's Knot DNS as a secondary of cairn: NOTIFY at start brings an AXFR;
    after a reload with a new serial, NOTIFY brings an IXFR, answered AXFR-style,
    which Knot takes, and serves each version; an IXFR from the serial Knot now holds
    is answered by the single SOA."""
    if not os.path.exists(KNOTD):
        pytest.fail("knotd is not installed (scripts/deps.sh installs it)")
    port, admin, kport = free_port(), free_port(), free_port()
    (tmp_path / "knot").mkdir()   # its database, journal and the zone file it keeps
    (tmp_path / "knot.conf").write_text(f"""
server:
    listen: 127.0.0.1@{kport}
    rundir: {tmp_path}/knot
log:
  - target: stderr
    any: info
database:
    storage: {tmp_path}/knot
remote:
  - id: primary
    address: 127.0.0.1@{port}
acl:
  - id: notify_from_primary
    address: 127.0.0.1
    action: notify
zone:
  - domain: example.test
    storage: {tmp_path}/knot
    file: example.test.secondary
    master: primary
    acl: notify_from_primary
""")
    knot = subprocess.Popen([KNOTD, "-c", str(tmp_path / "knot.conf")], cwd=tmp_path,
                            stdout=open(tmp_path / "knot.log", "wb"), stderr=subprocess.STDOUT)
    try:
        stack = dns_stack(tmp_path, port, admin, zone=f'secondaries: ["127.0.0.1:{kport}"]')
        p = start_dns(start, stack, port)

        def knot_serial():
            try:
                r = q(kport, "example.test.", "SOA")
                return r.answer[0][0].serial if r.rcode() == dns.rcode.NOERROR and r.answer else None
            except dns.exception.Timeout:
                return None
        # Knot may start after the first NOTIFY: its own refresh then asks
        wait_for(lambda: knot_serial() == 2026112601, timeout=20, what="knot has the zone")
        assert addrs(q(kport, "web.example.test.")) == addrs(q(port, "web.example.test."))
        bump_serial(tmp_path / "example.test.zone", 2026112702, "\nixfrtest IN A 192.0.2.77\n")
        p.signal(signal.SIGHUP)
        wait_for(lambda: knot_serial() == 2026112702, timeout=20, what="knot took the new serial")
        assert addrs(q(kport, "ixfrtest.example.test.")) == ["192.0.2.77"]
        wait_for(lambda: "AXFR-style IXFR" in open(tmp_path / "knot.log").read(), timeout=5,
                 what="knot's log of the IXFR")
        # up to date: an IXFR from Knot's serial is the single SOA
        r = dns.query.tcp(ixfr_query(2026112702), "127.0.0.1", port=port, timeout=3)
        assert [rr.rdtype for rr in r.answer] == [dns.rdatatype.SOA]
    finally:
        knot.send_signal(signal.SIGTERM)
        try:
            knot.wait(timeout=10)
        except subprocess.TimeoutExpired:
            knot.kill()
            knot.wait()
