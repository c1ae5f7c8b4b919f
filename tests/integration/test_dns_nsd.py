"""Differential test: the same zone served by cairn and by Debian's NSD
(minimal-responses, as Knot and BIND answer by default); several hundred
questions over UDP and TCP, with and without EDNS, compared section by section."""
import os
import shutil
import signal
import subprocess

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.rcode
import dns.zone
import pytest

from conftest import free_port, wait_for, write_stack

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
ZONE = "example.test"

NSD = shutil.which("nsd") or "/usr/sbin/nsd"


def query(port, name, rdtype, tcp=False, edns=True, payload=1232, dnssec=False, rd=False):
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns else False,
                               payload=payload, want_dnssec=dnssec)
    if not rd:
        q.flags &= ~dns.flags.RD
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=port, timeout=3)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=3, ignore_trailing=False)


def ready(port):
    try:
        m = dns.message.make_query(ZONE, "SOA")
        r = dns.query.udp(m, "127.0.0.1", port=port, timeout=0.2)
        return r.rcode() == dns.rcode.NOERROR
    except Exception:
        return False


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    if not os.path.exists(NSD):
        pytest.fail("nsd is not installed (scripts/deps.sh installs it)")
    d = tmp_path_factory.mktemp("dnsdiff")
    for f in ("example.test.zone", "example.test.inc"):
        shutil.copy(os.path.join(DATA, f), d / f)
    cport, nport = free_port(), free_port()
    stack = write_stack(d, f"""
services:
  dns:
    role: dns
    listen: ["127.0.0.1:{cport}"]
    zones:
      - {{origin: {ZONE}, file: example.test.zone}}
""")
    (d / "nsd.conf").write_text(f"""
server:
    ip-address: 127.0.0.1@{nport}
    port: {nport}
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "{d}"
    database: ""
    zonelistfile: "{d}/zone.list"
    xfrdfile: "{d}/xfrd.state"
    xfrdir: "{d}"
    pidfile: "{d}/nsd.pid"
    logfile: "{d}/nsd.log"
    verbosity: 0
    minimal-responses: yes
    hide-version: yes
    rrl-ratelimit: 0
    do-ip6: no
remote-control:
    control-enable: no
zone:
    name: {ZONE}
    zonefile: example.test.zone
""")
    from conftest import CAIRN
    cairn = subprocess.Popen([CAIRN, "run", "dns", "-c", stack], cwd=d,
                             stdout=open(d / "cairn.out", "wb"), stderr=open(d / "cairn.err", "wb"))
    nsd = subprocess.Popen([NSD, "-d", "-c", str(d / "nsd.conf")], cwd=d,
                           stdout=open(d / "nsd.out", "wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: ready(cport), what="cairn dns")
        wait_for(lambda: ready(nport), what="nsd")
        yield cport, nport
    finally:
        for p in (cairn, nsd):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (cairn, nsd):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        assert cairn.returncode == 0, (d / "cairn.err").read_text()


def questions():
    """Every name of the zone with many types, plus names that do not exist,
    wildcards, names below delegations and case variants."""
    cwd = os.getcwd()
    os.chdir(DATA)      # dnspython opens $INCLUDE files relative to the working directory
    try:
        z = dns.zone.from_file("example.test.zone", origin=ZONE, relativize=False,
                               allow_include=True, check_origin=True)
    finally:
        os.chdir(cwd)
    names = sorted({str(n) for n in z.nodes.keys()})
    names += [
        "nope.example.test.", "a.nope.example.test.", "deep.example.test.", "c.deep.example.test.",
        "b.c.deep.example.test.", "x.wild.example.test.", "x.y.wild.example.test.",
        "sub.wild.example.test.", "x.sub.wild.example.test.", "foo.wcname.example.test.",
        "x.child.example.test.", "a.b.child.example.test.", "x.nogl.example.test.",
        "ns1.child.example.test.", "WWW.EXAMPLE.TEST.", "wWw.ExAmPlE.tEsT.",
        "mixed.case.example.test.", "MIXED.CASE.EXAMPLE.TEST.", "X.WILD.example.test.",
        "example.test.", "EXAMPLE.TEST.", "inc.example.test.", "rel.inc.example.test.",
        "_tcp.example.test.", "in-addr.example.test.",
    ]
    types = ["A", "AAAA", "NS", "SOA", "MX", "TXT", "CNAME", "SRV", "PTR", "CAA", "HINFO", "DS",
             "TYPE65280", "ANY"]
    qs = []
    for n in dict.fromkeys(names):
        for t in types:
            qs.append((n, t, False, True))
    # transports and EDNS on a subset that includes truncation
    for n in ["example.test.", "www.example.test.", "big.example.test.", "many.example.test.",
              "nope.example.test.", "x.child.example.test.", "chain1.example.test.",
              "x.wild.example.test."]:
        for t in ["A", "TXT", "MX", "NS", "AAAA", "SOA"]:
            qs.append((n, t, True, True))
            qs.append((n, t, False, False))
            qs.append((n, t, True, False))
    return qs


def rrsets(section):
    out = {}
    for rrset in section:
        key = (rrset.name.to_text().lower(), rrset.rdclass, rrset.rdtype, rrset.covers)
        out[key] = (rrset.ttl, sorted(r.to_text().lower() for r in rrset))
    return out


def describe(r):
    opt = (r.edns, r.payload) if r.edns >= 0 else None
    return {
        "rcode": dns.rcode.to_text(r.rcode()),
        "flags": dns.flags.to_text(r.flags),
        "answer": rrsets(r.answer),
        "authority": rrsets(r.authority),
        "additional": rrsets(r.additional),
        "opt": opt,
    }


def test_answers_match_nsd(servers):
    cport, nport = servers
    qs = questions()
    assert len(qs) >= 300
    diffs = []
    for name, rdtype, tcp, edns in qs:
        a = describe(query(cport, name, rdtype, tcp=tcp, edns=edns))
        b = describe(query(nport, name, rdtype, tcp=tcp, edns=edns))
        if a != b:
            diffs.append(f"{name} {rdtype} tcp={tcp} edns={edns}\n  cairn: {a}\n  nsd:   {b}")
    assert not diffs, f"{len(diffs)} of {len(qs)} answers differ:\n" + "\n".join(diffs[:20])


def test_question_case_preserved(servers):
    cport, _ = servers
    r = query(cport, "wWw.ExAmPlE.tEsT.", "A")
    assert r.question[0].name.to_text() == "wWw.ExAmPlE.tEsT."
    # the answer's owner points at the question, so it keeps the query's case too
    assert r.answer[0].name.to_text() == "wWw.ExAmPlE.tEsT."


def test_refused_outside_zones(servers):
    cport, nport = servers
    for port in (cport, nport):
        r = query(port, "www.example.org.", "A")
        assert r.rcode() == dns.rcode.REFUSED
        assert not r.flags & dns.flags.AA
