#!/usr/bin/python3
"""A runner for Prometheus's PromQL test-file format, over HTTP.

Test files (tests/promql/*.test) are written in the format of Prometheus's
promql/testdata:

    load <interval>
        <series> <values in expanding notation: 1+2x3 _ stale -1-1x2 5x4 _x2>
    clear
    eval instant at <duration> <query>
        <expected series> <value>        (or one bare number for a scalar)
    eval_ordered instant at <duration> <query>
    eval_fail instant at <duration> <query>
    eval range from <duration> to <duration> step <duration> <query>
        <expected series> <values in expanding notation, _ for no point>
    expect fail | expect ordered          (before the expected lines, the newer spelling)

The runner pushes every `load` block by remote_write into a server (time-major, so
appends are in order), runs each eval through /api/v1/query or
/api/v1/query_range, and compares: the same series, values equal within 1e-6
relative (NaN equals NaN), in order for eval_ordered. `clear` calls a reset
callback that gives it a fresh, empty server. The same files are run against
cairn and against Debian's Prometheus, so every expectation is checked against
the reference too.

usage: promql_tests.py URL FILE...   (URL: a fresh server; `clear` is refused)
"""
import math
import re
import sys

import requests

from promwrite import STALE_NAN, push_url

DUR_RE = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
NUM = r"[+-]?(?:Inf|NaN|inf|nan|0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
SERIES_ITEM = re.compile(r"^(%s)(?:([+-])(%s))?x(\d+)$" % (NUM, NUM.replace("[+-]?", "")))


def parse_duration(s):
    s = s.strip()
    if re.fullmatch(r"-?\d+", s):
        return int(s) * 1000
    neg = s.startswith("-")
    m = DUR_RE.match(s.lstrip("-"))
    if not m or not any(m.groups()):
        raise ValueError(f"bad duration {s!r}")
    mult = [365 * 86400000, 7 * 86400000, 86400000, 3600000, 60000, 1000, 1]
    ms = sum(int(g) * k for g, k in zip(m.groups(), mult) if g)
    return -ms if neg else ms


def parse_num(s):
    s = s.strip()
    low = s.lower().lstrip("+-")
    if low == "inf":
        return -math.inf if s.startswith("-") else math.inf
    if low == "nan":
        return math.nan
    if "0x" in low:
        return float(int(s, 16))
    return float(s)


def expand_values(text):
    """'1+2x3 _ stale 4' -> [1, 3, 5, 7, None, 'stale', 4]"""
    out = []
    for tok in text.split():
        if tok == "_":
            out.append(None)
        elif tok == "stale":
            out.append("stale")
        elif re.fullmatch(r"_x\d+", tok):
            out.extend([None] * int(tok[2:]))
        else:
            m = SERIES_ITEM.match(tok)
            if m:
                start = parse_num(m.group(1))
                step = parse_num(m.group(3)) if m.group(3) else 0.0
                if m.group(2) == "-":
                    step = -step
                n = int(m.group(4))
                out.extend(start + i * step for i in range(n + 1))
            else:
                out.append(parse_num(tok))
    return out


def parse_series(text):
    """'name{a="b"} rest' -> (labels dict, rest)."""
    text = text.strip()
    m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)?", text)
    name = m.group(1)
    i = m.end()
    labels = {}
    if name:
        labels["__name__"] = name
    if i < len(text) and text[i] == "{":
        i += 1
        while True:
            while i < len(text) and text[i] in " ,":
                i += 1
            if text[i] == "}":
                i += 1
                break
            lm = re.match(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"', text[i:])
            if not lm:
                raise ValueError(f"bad label matcher at {text[i:]!r}")
            labels[lm.group(1)] = bytes(lm.group(2), "utf-8").decode("unicode_escape")
            i += lm.end()
    return labels, text[i:].strip()


class Case:
    def __init__(self, line, kind, query, t=None, start=None, end=None, step=None, fail=False,
                 ordered=False):
        self.line, self.kind, self.query = line, kind, query
        self.t, self.start, self.end, self.step = t, start, end, step
        self.fail, self.ordered = fail, ordered
        self.expected = []          # [(labels, values)] ; scalar: [(None, [v])]


def parse_file(path):
    """Returns a list of commands: ('load', interval, [(labels, values)]), ('clear',),
    ('eval', Case)."""
    cmds = []
    lines = open(path).read().split("\n")
    i = 0
    while i < len(lines):
        raw = lines[i]
        line = raw.strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("load "):
            interval = parse_duration(line[5:])
            block = []
            while i < len(lines) and lines[i].strip() and (lines[i][0] in " \t"):
                if not lines[i].strip().startswith("#"):
                    labels, rest = parse_series(lines[i])
                    block.append((labels, expand_values(rest)))
                i += 1
            cmds.append(("load", interval, block))
        elif line == "clear":
            cmds.append(("clear",))
        elif line.startswith("eval"):
            m = re.match(r"^(eval|eval_fail|eval_ordered)\s+instant\s+at\s+(\S+)\s+(.+)$", line)
            if m:
                c = Case(i, "instant", m.group(3), t=parse_duration(m.group(2)),
                         fail=m.group(1) == "eval_fail", ordered=m.group(1) == "eval_ordered")
            else:
                m = re.match(r"^(eval|eval_fail)\s+range\s+from\s+(\S+)\s+to\s+(\S+)\s+step\s+(\S+)\s+(.+)$", line)
                if not m:
                    raise ValueError(f"{path}:{i}: cannot parse {line!r}")
                c = Case(i, "range", m.group(5), start=parse_duration(m.group(2)),
                         end=parse_duration(m.group(3)), step=parse_duration(m.group(4)),
                         fail=m.group(1) == "eval_fail")
            while i < len(lines) and lines[i].strip() and lines[i][0] in " \t":
                body = lines[i].strip()
                i += 1
                if body.startswith("#"):
                    continue
                if body.startswith("expect "):
                    what = body[7:].split()[0]
                    if what == "fail":
                        c.fail = True
                    elif what == "ordered":
                        c.ordered = True
                    continue
                if re.fullmatch(NUM, body):
                    c.expected.append((None, [parse_num(body)]))
                    continue
                if body.startswith('"'):
                    c.expected.append(("string", [bytes(body[1:-1], "utf-8").decode("unicode_escape")]))
                    continue
                labels, rest = parse_series(body)
                c.expected.append((labels, expand_values(rest)))
            cmds.append(("eval", c))
        else:
            raise ValueError(f"{path}:{i}: unknown command {line!r}")
    return cmds


def load(base, interval, block):
    """Pushes a load block in time order, 60 points of every series per request."""
    n = max((len(v) for _, v in block), default=0)
    for lo in range(0, n, 60):
        batch = []
        for labels, values in block:
            pts = []
            for k in range(lo, min(lo + 60, len(values))):
                v = values[k]
                if v is None:
                    continue
                pts.append((k * interval, STALE_NAN if v == "stale" else float(v)))
            if pts:
                batch.append((labels, pts))
        if batch:
            r = push_url(base, batch)
            if r.status_code // 100 != 2:
                raise RuntimeError(f"push refused: {r.status_code} {r.text}")


def close(a, b):
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if a == b:
        return True
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b))


def fmt(labels):
    if labels is None or labels == "string":
        return labels or "scalar"
    name = labels.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return name + "{" + rest + "}"


def run_case(base, c):
    """None when the case passes, else a message."""
    if c.kind == "instant":
        r = requests.post(base.rstrip("/") + "/api/v1/query", data={"query": c.query, "time": c.t / 1000},
                          timeout=30)
    else:
        r = requests.post(base.rstrip("/") + "/api/v1/query_range",
                          data={"query": c.query, "start": c.start / 1000, "end": c.end / 1000,
                                "step": c.step / 1000}, timeout=30)
    body = r.json()
    if c.fail:
        if body.get("status") == "error":
            return None
        return f"expected an error, got {r.text[:300]}"
    if body.get("status") != "success":
        return f"error {r.status_code}: {body.get('error')}"
    data = body["data"]
    got = []
    if data["resultType"] == "scalar":
        got = [(None, [float(data["result"][1])])]
    elif data["resultType"] == "string":
        got = [("string", [data["result"][1]])]
    elif data["resultType"] == "vector":
        got = [(s["metric"], [float(s["value"][1])]) for s in data["result"]]
    elif data["resultType"] == "matrix":
        if c.kind == "range":
            steps = list(range(c.start, c.end + 1, c.step))
            for s in data["result"]:
                vals = {round(float(t) * 1000): float(v) for t, v in s["values"]}
                got.append((s["metric"], [vals.get(t) for t in steps]))
        else:
            got = [(s["metric"], [float(v) for _, v in s["values"]]) for s in data["result"]]
    else:
        return f"unexpected result type {data['resultType']}"
    exp = [(lbl, vals) for lbl, vals in c.expected]
    if c.kind == "range":
        n = len(range(c.start, c.end + 1, c.step))
        exp = [(lbl, (vals + [None] * n)[:n]) for lbl, vals in exp]
    key = lambda x: fmt(x[0])  # noqa: E731
    if not c.ordered:
        got = sorted(got, key=key)
        exp = sorted(exp, key=key)
    if [fmt(g[0]) for g in got] != [fmt(e[0]) for e in exp]:
        return "series differ:\n      got:      %s\n      expected: %s" % (
            "; ".join(f"{fmt(g[0])} {g[1]}" for g in got) or "(none)",
            "; ".join(f"{fmt(e[0])} {e[1]}" for e in exp) or "(none)")
    for (gl, gv), (el, ev) in zip(got, exp):
        if len(gv) != len(ev) or not all(close(a, b) for a, b in zip(gv, ev)):
            return f"values differ for {fmt(gl)}: got {gv}, expected {ev}"
    return None


def run_file(base, path, reset=None):
    """Runs one file; returns (passed, [failure messages])."""
    passed, failures = 0, []
    for cmd in parse_file(path):
        if cmd[0] == "load":
            load(base, cmd[1], cmd[2])
        elif cmd[0] == "clear":
            if reset is None:
                raise RuntimeError("clear needs a reset callback")
            base = reset()
        else:
            c = cmd[1]
            msg = run_case(base, c)
            if msg:
                failures.append(f"{path}:{c.line}: {c.query}\n    {msg}")
            else:
                passed += 1
    return passed, failures


if __name__ == "__main__":
    url = sys.argv[1]
    total = 0
    bad = []
    for f in sys.argv[2:]:
        p, fl = run_file(url, f)
        total += p
        bad += fl
    for m in bad:
        print("FAIL", m)
    print(f"{total} passed, {len(bad)} failed")
    sys.exit(1 if bad else 0)
