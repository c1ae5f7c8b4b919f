"""role log-agent: Promtail's config, file tailing through rotation and crashes, store
outages, syslog, pipeline stages, against a real logs service."""
import json
import os
import signal
import socket
import subprocess
import threading
import time

import requests

from conftest import free_port, wait_for, write_stack


def start_pair(start, tmp_path, promtail, names=("logs", "agent"), logs_port=None, agent_port=None):
    logs_port = logs_port or free_port()
    agent_port = agent_port or free_port()
    text = f"""
data_dir: data
services:
  logs:
    role: logs
    listen: ["127.0.0.1:{logs_port}"]
  agent:
    role: log-agent
    listen: ["127.0.0.1:{agent_port}"]
    promtail:
""" + "\n".join("      " + l for l in promtail.replace("LOGS", f"127.0.0.1:{logs_port}").splitlines())
    stack = write_stack(tmp_path, text)
    procs = {}
    if "logs" in names:
        procs["logs"] = start(["run", "logs", "-c", stack], name="logs")
        wait_for(lambda: requests.get(f"http://127.0.0.1:{logs_port}/ready", timeout=1).status_code == 200,
                 what="logs ready")
    if "agent" in names:
        procs["agent"] = start(["run", "agent", "-c", stack], name="agent")
        wait_for(lambda: requests.get(f"http://127.0.0.1:{agent_port}/ready", timeout=1).status_code == 200,
                 what="agent ready")
    return procs, f"http://127.0.0.1:{logs_port}", f"http://127.0.0.1:{agent_port}", stack, logs_port, agent_port


def lines(url, q, span_s=3600):
    """Every entry of q in the last span_s seconds, page by page (5000 at most per query)."""
    end = time.time_ns() + 10**9
    start, out = end - span_s * 10**9, []
    while True:
        r = requests.get(url + "/loki/api/v1/query_range", timeout=20, params={
            "query": q, "start": str(start), "end": str(end), "limit": "5000", "direction": "forward"})
        assert r.status_code == 200, r.text
        page = [(int(v[0]), s["stream"], v[1]) for s in r.json()["data"]["result"] for v in s["values"]]
        page.sort(key=lambda e: e[0])
        out += [(st, l) for ts, st, l in page if ts < end]
        if len(page) < 5000:
            return out
        # the next page starts after the last whole timestamp of this one
        last = page[-1][0]
        out = out[:len(out) - sum(1 for ts, _, _ in page if ts == last)]
        start = last


class Writer(threading.Thread):
    """Appends numbered lines to a file at a steady rate; rotate() renames or truncates."""

    def __init__(self, path, rate=300):
        super().__init__(daemon=True)
        self.path, self.rate, self.n, self.stop_ev = path, rate, 0, threading.Event()
        self.lock = threading.Lock()
        self.f = open(path, "a", buffering=1)

    def run(self):
        while not self.stop_ev.is_set():
            with self.lock:
                self.f.write(f"seq={self.n} msg=steady\n")
                self.n += 1
            time.sleep(1 / self.rate)

    def rotate_rename(self):
        with self.lock:
            self.f.close()
            os.rename(self.path, self.path + ".1")
            self.f = open(self.path, "a", buffering=1)

    def rotate_copytruncate(self, caught_up=None):
        """As logrotate's copytruncate; lines written between the tailer's last read and
        the truncation are only in the copy (true of every tailer), so the writer pauses
        until caught_up() says the tailer has read them."""
        with self.lock:
            self.f.flush()
            if caught_up:
                wait_for(lambda: caught_up(self.n), timeout=10, what="the agent caught up")
            with open(self.path, "rb") as src, open(self.path + ".copy", "wb") as dst:
                dst.write(src.read())
            self.f.truncate(0)
            self.f.seek(0)

    def finish(self):
        self.stop_ev.set()
        self.join(5)
        self.f.close()
        return self.n


FILES = """positions: {filename: positions.yaml, sync_period: 1s}
clients: [{url: "http://LOGS/loki/api/v1/push", batchwait: 200ms, backoff_config: {min_period: 200ms, max_period: 2s}}]
scrape_configs:
  - job_name: app
    static_configs:
      - targets: [localhost]
        labels: {job: app, __path__: LOGDIR/*.log}
"""


def missing(url, n):
    s = set(seqs(url))
    return sorted(set(range(n)) - s)[:50]


def seqs(url):
    out = []
    for _, l in lines(url, '{job="app"}'):
        if l.startswith("seq="):
            out.append(int(l.split()[0][4:]))
    return out


def all_lines(url, n, timeout):
    try:
        return wait_for(lambda: (lambda s: s if set(s) >= set(range(n)) else None)(seqs(url)), timeout=timeout,
                        what=f"all {n} lines")
    except AssertionError as e:
        raise AssertionError(f"{e}; missing: {missing(url, n)}")


def test_rotation_both_ways_loses_no_line(start, tmp_path):
    logdir = tmp_path / "app"
    logdir.mkdir()
    procs, url, _, _, _, _ = start_pair(start, tmp_path, FILES.replace("LOGDIR", str(logdir)))
    w = Writer(str(logdir / "app.log"))
    w.start()
    time.sleep(1.0)
    w.rotate_rename()
    time.sleep(1.0)
    w.rotate_copytruncate(lambda n: len(set(seqs(url)) & set(range(n))) == n)
    time.sleep(1.0)
    w.rotate_rename()
    time.sleep(0.5)
    n = w.finish()
    got = all_lines(url, n, 20)
    assert set(got) == set(range(n))
    # the copy made by copytruncate is not tailed (*.log.copy does not match) and
    # nothing was read twice except what at-least-once allows (none on a clean run)
    assert len(got) == n


def test_agent_kill9_under_a_steady_writer_loses_no_line(start, tmp_path):
    logdir = tmp_path / "app"
    logdir.mkdir()
    procs, url, agent_url, stack, lp, ap = start_pair(start, tmp_path, FILES.replace("LOGDIR", str(logdir)))
    w = Writer(str(logdir / "app.log"))
    w.start()
    time.sleep(1.5)
    procs["agent"].signal(signal.SIGKILL)
    procs["agent"].wait(10)
    time.sleep(1.0)                 # lines keep coming while no agent runs
    agent = start(["run", "agent", "-c", stack], name="agent2")
    wait_for(lambda: requests.get(agent_url + "/ready", timeout=1).status_code == 200, what="agent back")
    time.sleep(1.0)
    n = w.finish()
    got = all_lines(url, n, 20)
    assert set(got) == set(range(n))
    # at-least-once: what was sent but not yet recorded as sent may come twice, never more
    assert len(got) - n <= w.rate * 2
    pos = (tmp_path / "positions.yaml").read_text()
    assert str(logdir / "app.log") in pos
    agent.signal(signal.SIGTERM)
    assert agent.wait(10) == 0


def test_a_store_outage_of_a_minute_loses_no_line(start, tmp_path):
    logdir = tmp_path / "app"
    logdir.mkdir()
    procs, url, agent_url, stack, lp, ap = start_pair(start, tmp_path, FILES.replace("LOGDIR", str(logdir)))
    w = Writer(str(logdir / "app.log"), rate=100)
    w.start()
    time.sleep(1.0)
    procs["logs"].signal(signal.SIGTERM)
    assert procs["logs"].wait(15) == 0
    time.sleep(60)                  # the store is away for a minute; the writer goes on
    m = requests.get(agent_url + "/metrics", timeout=5).text
    retries = [l for l in m.splitlines() if l.startswith("cairn_log_agent_push_retries_total")]
    assert retries and float(retries[0].split()[1]) > 0
    logs = start(["run", "logs", "-c", stack], name="logs2")
    wait_for(lambda: requests.get(url + "/ready", timeout=1).status_code == 200, what="logs back")
    time.sleep(1.0)
    n = w.finish()
    got = all_lines(url, n, 60)
    assert set(got) == set(range(n))
    logs.signal(signal.SIGTERM)


SYSLOG = """clients: [{url: "http://LOGS/loki/api/v1/push", batchwait: 100ms}]
scrape_configs:
  - job_name: syslog
    syslog: {listen_address: "127.0.0.1:SPORT", labels: {job: syslog}, label_structured_data: true}
    relabel_configs:
      - {source_labels: [__syslog_message_app_name], target_label: app}
      - {source_labels: [__syslog_message_severity], target_label: level}
      - {source_labels: [__syslog_message_hostname], target_label: host}
      - {source_labels: [__syslog_message_sd_origin_software], target_label: software}
"""


def test_syslog_rfc5424_and_rfc3164_over_udp_and_tcp(start, tmp_path):
    sport = free_port()
    procs, url, _, _, _, _ = start_pair(start, tmp_path, SYSLOG.replace("SPORT", str(sport)))
    sp = str(sport)
    for args in (["--rfc5424", "-d"], ["--rfc3164", "-d"], ["--rfc5424", "-T"], ["--rfc3164", "-T"]):
        r = subprocess.run(["logger", "-n", "127.0.0.1", "-P", sp, "-t", "myapp", "-p", "user.err"] + args +
                           [f"hello {' '.join(args)}"], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
    # octet counting with structured data, by hand
    with socket.create_connection(("127.0.0.1", sport), timeout=5) as s:
        for i in range(3):
            m = (f'<165>1 2026-01-02T03:04:05.000Z web01 shop 42 ID47 [origin software="cairn"] '
                 f'order {i} placed').encode()
            s.sendall(str(len(m)).encode() + b" " + m)
    def got():
        ls = lines(url, '{job="syslog"}')
        return ls if len(ls) >= 7 else None
    ls = wait_for(got, timeout=10, what="7 syslog lines")
    msgs = sorted(l for _, l in ls)
    assert "hello --rfc5424 -d" in msgs and "hello --rfc3164 -T" in msgs
    assert {"order 0 placed", "order 1 placed", "order 2 placed"} <= set(msgs)
    by = {l: st for st, l in ls}
    assert by["hello --rfc5424 -d"]["app"] == "myapp" and by["hello --rfc5424 -d"]["level"] == "error"
    assert by["hello --rfc3164 -T"]["app"] == "myapp"
    assert by["order 1 placed"] == {"job": "syslog", "app": "shop", "level": "notice", "host": "web01",
                                    "software": "cairn"}


STAGES = """clients: [{url: "http://LOGS/loki/api/v1/push", batchwait: 100ms}]
scrape_configs:
  - job_name: app
    static_configs:
      - targets: [localhost]
        labels: {job: stages, __path__: LOGDIR/*.log}
    pipeline_stages:
      - multiline: {firstline: '^\\{|^level=', max_wait_time: 500ms}
      - match:
          selector: '{job="stages"} |= "healthcheck"'
          action: drop
      - match:
          selector: '{job="stages"} |~ "^\\\\{"'
          stages:
            - json: {expressions: {level: lvl, msg: message, ts: time}}
            - timestamp: {source: ts, format: RFC3339}
            - output: {source: msg}
      - regex: {expression: '^level=(?P<level>\\w+) (?s)(?P<rest>.*)$'}
      - labels: {level: ""}
      - static_labels: {team: core}
"""


def test_pipeline_stages(start, tmp_path):
    logdir = tmp_path / "app"
    logdir.mkdir()
    procs, url, _, _, _, _ = start_pair(start, tmp_path, STAGES.replace("LOGDIR", str(logdir)))
    t = (int(time.time()) - 86400) // 60 * 60 * 10**9        # a day ago: the line's own time
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t // 10**9))
    with open(logdir / "a.log", "w") as f:
        f.write('{"lvl":"warn","message":"disk almost full","time":"%s"}\n' % stamp)
        f.write("level=error boom\n  at frame 1\n  at frame 2\n")
        f.write("level=info healthcheck ok\n")
        f.write("level=info done\n")
    def got():
        ls = lines(url, '{job="stages"}', span_s=30 * 86400)
        return ls if len(ls) >= 3 else None
    ls = wait_for(got, timeout=10, what="3 lines")
    assert sorted(l for _, l in ls) == ["disk almost full", "level=error boom\n  at frame 1\n  at frame 2",
                                        "level=info done"]
    levels = {l: st.get("level") for st, l in ls}
    assert levels == {"disk almost full": "warn", "level=error boom\n  at frame 1\n  at frame 2": "error",
                      "level=info done": "info"}
    assert all(st["team"] == "core" for st, _ in ls)
    # the JSON line carries its own time
    r = requests.get(url + "/loki/api/v1/query_range", timeout=10, params={
        "query": '{job="stages", level="warn"}', "start": str(t - 10**9), "end": str(t + 10**9)})
    assert [v[0] for s in r.json()["data"]["result"] for v in s["values"]] == [str(t)]


def test_promtail_config_errors_are_clear(tmp_path):
    from conftest import run_cairn
    stack = write_stack(tmp_path, """
services:
  agent:
    role: log-agent
    promtail:
      clients: [{url: "ftp://x"}]
      scrape_configs:
        - job_name: a
          static_configs: [{labels: {job: a}}]
          pipeline_stages: [{nosuch: {}}]
""")
    r = run_cairn(["check", "-c", stack])
    assert r.returncode != 0
    assert "missing label __path__" in r.stderr
    assert "unknown stage \"nosuch\"" in r.stderr
    assert "clients[0].url" in r.stderr
