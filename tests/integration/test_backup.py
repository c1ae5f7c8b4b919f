"""role backup and its commands: restic-compatible repositories, checked with the
real restic 0.14 both ways (restic reads what cairn writes, cairn reads what
restic writes, each deduplicates against the other), store snapshots and the
failover drill, schedules, retention, locks, faults, and S3 through the s3 role."""
import json
import os
import signal
import stat
import subprocess
import time

import pytest
import requests

from conftest import CAIRN, free_port, wait_for, write_stack
from conftest import run_cairn as _run_cairn

PW = "correct horse battery staple"


def run_cairn(args, cwd=None, timeout=20):
    """A cairn command; under a sanitizer build its report fails the test."""
    r = _run_cairn(args, cwd=cwd, timeout=timeout)
    for marker in ("ERROR: LeakSanitizer", "ERROR: AddressSanitizer", "runtime error:"):
        assert marker not in r.stderr, f"cairn {' '.join(args)}:\n{r.stderr[-3000:]}"
    return r


def restic(repo, *args, pw_file, check=True, env=None, timeout=120):
    e = dict(os.environ, RESTIC_PASSWORD_FILE=str(pw_file), RESTIC_CACHE_DIR="/nonexistent-cache",
             **(env or {}))
    r = subprocess.run(["restic", "-r", str(repo), "--no-cache"] + list(args), capture_output=True, text=True,
                       env=e, timeout=timeout)
    if check:
        assert r.returncode == 0, f"restic {args}: {r.stdout}\n{r.stderr}"
    return r


def make_tree(root):
    """Files of every kind restic stores: big and small, random and compressible,
    empty, a symlink, a hard link, a subdirectory, odd modes and times, an xattr."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "random.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (root / "sub" / "log.txt").write_text("".join(f"line {i} GET /index.html 200\n" for i in range(60000)))
    (root / "small.txt").write_text("hello\n")
    (root / "empty").write_bytes(b"")
    (root / "sub" / "deeper" / "x.cfg").write_text("a=1\n")
    os.symlink("small.txt", root / "link")
    os.link(root / "small.txt", root / "hard")
    os.chmod(root / "sub" / "deeper" / "x.cfg", 0o640)
    os.chmod(root / "sub" / "deeper", 0o750)
    os.utime(root / "random.bin", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    try:
        os.setxattr(root / "small.txt", "user.origin", b"cairn-test")
    except OSError:
        pass                            # the file system has no user xattrs


def under(target, path):
    """Where a restore into target puts an absolute path that was backed up (restic
    keeps the whole path)."""
    return target / str(path).lstrip("/")


def snapshot_of(root):
    """Every entry under root: type, mode, size, mtime (ns), content, link target."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            e = {"mode": stat.S_IMODE(st.st_mode), "type": stat.S_IFMT(st.st_mode)}
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    e["data"] = f.read()
                e["mtime"] = st.st_mtime_ns
            elif stat.S_ISLNK(st.st_mode):
                e["target"] = os.readlink(p)
            out[rel] = e
    return out


def stack_text(repo="{path: repo}", extra_jobs="", port=None, extra_services="", pw="password_file: pw"):
    port = port or free_port()
    return f"""
data_dir: data
services:
  backup:
    role: backup
    listen: ["127.0.0.1:{port}"]
    repository: {repo}
    {pw}
    jobs:
      - name: files
        paths: [src]
        exclude: ["*.tmp"]
{extra_jobs}
{extra_services}"""


@pytest.fixture
def repo_setup(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    (tmp_path / "pw").write_text(PW + "\n")
    stack = write_stack(tmp_path, stack_text())
    return tmp_path, src, stack


def test_restic_reads_what_cairn_writes(repo_setup):
    tmp, src, stack = repo_setup
    (src / "skip.tmp").write_text("excluded")
    r = run_cairn(["backup", "-c", stack, "files"], cwd=tmp, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "snapshot" in r.stdout
    (src / "skip.tmp").unlink()
    out = restic(tmp / "repo", "check", "--read-data", pw_file=tmp / "pw")
    assert "no errors were found" in out.stdout
    snaps = json.loads(restic(tmp / "repo", "snapshots", "--json", pw_file=tmp / "pw").stdout)
    assert len(snaps) == 1
    assert snaps[0]["paths"] == [str(src)]
    assert "job=files" in snaps[0]["tags"] and "stack=stack" in snaps[0]["tags"]
    assert snaps[0]["excludes"] == ["*.tmp"]
    restic(tmp / "repo", "restore", "latest", "--target", str(tmp / "out"), pw_file=tmp / "pw")
    got = under(tmp / "out", src)
    assert snapshot_of(got) == snapshot_of(src)
    assert os.stat(got / "hard").st_ino == os.stat(got / "small.txt").st_ino
    # cairn's own listing agrees
    mine = json.loads(run_cairn(["snapshots", "-c", stack, "--json"], cwd=tmp).stdout)
    assert [s["id"] for s in mine] == [snaps[0]["id"]]
    assert mine[0]["tree"] == snaps[0]["tree"]


def test_cairn_reads_what_restic_writes_and_both_deduplicate(repo_setup):
    tmp, src, stack = repo_setup
    restic(tmp / "repo", "init", pw_file=tmp / "pw")
    restic(tmp / "repo", "backup", str(src), pw_file=tmp / "pw")
    r = run_cairn(["restore", "-c", stack, "latest", "--target", str(tmp / "out")], cwd=tmp, timeout=120)
    assert r.returncode == 0, r.stderr
    got = under(tmp / "out", src)
    assert snapshot_of(got) == snapshot_of(src)
    if _xattr(src / "small.txt") is not None:
        assert _xattr(got / "small.txt") == b"cairn-test"
    # cairn backs up the same data: restic's chunks are cairn's chunks
    before = _raw_size(tmp / "repo")
    r = run_cairn(["backup", "-c", stack, "files"], cwd=tmp, timeout=120)
    assert r.returncode == 0, r.stderr
    added = _raw_size(tmp / "repo") - before
    # and the other way: a restic backup after a cairn backup of new data adds
    # only trees and metadata
    (src / "more.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    r = run_cairn(["backup", "-c", stack, "files"], cwd=tmp, timeout=120)
    assert r.returncode == 0, r.stderr
    before = _raw_size(tmp / "repo")
    out = restic(tmp / "repo", "backup", str(src), pw_file=tmp / "pw").stdout
    assert _raw_size(tmp / "repo") - before < 64 * 1024, out
    assert added < 64 * 1024, f"cairn re-stored {added} bytes of what restic had"
    assert "no errors were found" in restic(tmp / "repo", "check", "--read-data", pw_file=tmp / "pw").stdout


def _xattr(p):
    try:
        return os.getxattr(p, "user.origin")
    except OSError:
        return None


def _raw_size(repo):
    """Bytes in packs (a killed writer's temporary files are not packs)."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(repo / "data") for f in fs
               if len(f) == 64)


def test_second_backup_reads_only_changed_files(repo_setup):
    tmp, src, stack = repo_setup
    assert run_cairn(["backup", "-c", stack, "files"], cwd=tmp, timeout=120).returncode == 0
    (src / "sub" / "deeper" / "x.cfg").write_text("a=2\n")
    r = run_cairn(["backup", "-c", stack, "files"], cwd=tmp, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "0 new, 1 changed, 5 unmodified" in r.stdout, r.stdout
    snaps = json.loads(run_cairn(["snapshots", "-c", stack, "--json"], cwd=tmp).stdout)
    assert snaps[1]["parent"] == snaps[0]["id"]
    restic(tmp / "repo", "restore", "latest", "--target", str(tmp / "out"), pw_file=tmp / "pw")
    assert (under(tmp / "out", src) / "sub" / "deeper" / "x.cfg").read_text() == "a=2\n"
    assert (under(tmp / "out", src) / "random.bin").read_bytes() == (src / "random.bin").read_bytes()


def test_wrong_password_and_damage_are_named(repo_setup):
    tmp, src, stack = repo_setup
    assert run_cairn(["backup", "-c", stack, "files"], cwd=tmp, timeout=120).returncode == 0
    bad = write_stack(tmp, stack_text(pw="password: not-the-password"), name="bad.yaml")
    r = run_cairn(["snapshots", "-c", bad], cwd=tmp)
    assert r.returncode == 1 and "wrong password" in r.stderr
    # one flipped byte in the largest pack: check --read-data names it
    packs = [os.path.join(d, f) for d, _, fs in os.walk(tmp / "repo" / "data") for f in fs]
    victim = max(packs, key=os.path.getsize)
    with open(victim, "r+b") as f:
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 0xFF]))
    r = run_cairn(["repo", "check", "-c", stack], cwd=tmp, timeout=120)
    assert r.returncode == 0, r.stdout           # the structure is intact
    r = run_cairn(["repo", "check", "-c", stack, "--read-data"], cwd=tmp, timeout=120)
    assert r.returncode == 1
    assert os.path.basename(victim) in r.stdout and "does not hash to its name" in r.stdout
    assert restic(tmp / "repo", "check", "--read-data", pw_file=tmp / "pw", check=False).returncode != 0
    # a damaged index file: named, nothing else touched
    idx = os.path.join(tmp / "repo" / "index", os.listdir(tmp / "repo" / "index")[0])
    with open(idx, "r+b") as f:
        f.seek(40)
        f.write(b"\0\0\0\0")
    r = run_cairn(["snapshots", "-c", stack], cwd=tmp)
    assert r.returncode == 1 and os.path.basename(idx) in r.stderr


def test_interrupted_backup_leaves_a_sound_repository_and_resumes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(24):
        (src / f"f{i:02}.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    (tmp_path / "pw").write_text(PW)
    stack = write_stack(tmp_path, stack_text())
    assert run_cairn(["repo", "init", "-c", stack], cwd=tmp_path).returncode == 0
    p = subprocess.Popen([CAIRN, "backup", "-c", stack, "files", "-q"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        # kill -9 once some packs are on disk
        wait_for(lambda: _raw_size(tmp_path / "repo") > 40 * 1024 * 1024, timeout=60, interval=0.01,
                 what="packs written")
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait(timeout=10)
    written = _raw_size(tmp_path / "repo")
    # restic accepts it: nothing is referenced that was not written (--no-lock:
    # restic 0.14 wants `restic unlock` for the killed process's lock; cairn itself
    # sees that the lock's process is gone)
    out = restic(tmp_path / "repo", "--no-lock", "check", pw_file=tmp_path / "pw", check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    # the stale lock of the killed process does not stop the next run, which
    # stores only what the first run did not
    r = run_cairn(["backup", "-c", stack, "files"], cwd=tmp_path, timeout=180)
    assert r.returncode == 0, r.stderr
    total = 24 * 8 * 1024 * 1024
    assert _raw_size(tmp_path / "repo") < total * 1.02 + (written if written > total * 0.98 else 0), \
        "the second run stored again what the first one had"
    assert "no errors were found" in restic(tmp_path / "repo", "check", "--read-data",
                                            pw_file=tmp_path / "pw").stdout


def test_locks_keep_restic_and_cairn_apart(repo_setup):
    tmp, src, stack = repo_setup
    assert run_cairn(["backup", "-c", stack, "files"], cwd=tmp, timeout=120).returncode == 0
    # restic backs up from a pipe we hold open: it holds a shared lock meanwhile
    e = dict(os.environ, RESTIC_PASSWORD_FILE=str(tmp / "pw"))
    p = subprocess.Popen(["restic", "-r", str(tmp / "repo"), "--no-cache", "backup", "--stdin"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
    try:
        wait_for(lambda: os.listdir(tmp / "repo" / "locks"), timeout=30, what="restic's lock")
        r = run_cairn(["repo", "prune", "-c", stack], cwd=tmp)
        assert r.returncode == 1 and "already locked" in r.stderr, r.stderr
        # a shared lock does not stop a backup
        assert run_cairn(["backup", "-c", stack, "files"], cwd=tmp, timeout=120).returncode == 0
    finally:
        p.stdin.write(b"from a pipe\n")
        p.stdin.close()
        p.wait(timeout=60)
    assert p.returncode == 0
    assert run_cairn(["repo", "prune", "-c", stack], cwd=tmp).returncode == 0


def test_retention_forget_and_prune(repo_setup):
    tmp, src, stack_plain = repo_setup
    stack = write_stack(tmp, stack_text(extra_jobs="""        keep: {last: 2}
"""), name="keep.yaml")
    for i in range(4):
        (src / f"gen{i}.bin").write_bytes(os.urandom(1024 * 1024))
        r = run_cairn(["backup", "-c", stack, "files"], cwd=tmp, timeout=120)
        assert r.returncode == 0, r.stderr
        (src / f"gen{i}.bin").unlink()
    snaps = json.loads(run_cairn(["snapshots", "-c", stack, "--json"], cwd=tmp).stdout)
    assert len(snaps) == 2
    # the unused generations are gone from the packs; the two left restore
    assert _raw_size(tmp / "repo") < 3.5 * 1024 * 1024 + 2 * 1024 * 1024
    assert "no errors were found" in restic(tmp / "repo", "check", "--read-data", pw_file=tmp / "pw").stdout
    # forget by hand with restic's flags, then restic's own prune agrees
    r = run_cairn(["repo", "forget", "-c", stack, "--keep-last", "1", "--prune"], cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(restic(tmp / "repo", "snapshots", "--json", pw_file=tmp / "pw").stdout)) == 1
    restic(tmp / "repo", "prune", pw_file=tmp / "pw")
    assert "no errors were found" in restic(tmp / "repo", "check", "--read-data", pw_file=tmp / "pw").stdout


def test_config_errors(tmp_path):
    stack = write_stack(tmp_path, """
services:
  backup:
    role: backup
    listen: ["127.0.0.1:9095"]
    repository: {path: r}
    password: x
    jobs:
      - name: a
        paths: [/tmp]
        schedule: "61 * * * *"
      - name: b
        schedule: "@daily"
""")
    r = run_cairn(["check", "-c", stack])
    assert r.returncode == 2
    assert "jobs[0].schedule" in r.stderr and "outside 0-59" in r.stderr
    assert "jobs[1]" in r.stderr and "paths:, a service: or an etcd:" in r.stderr


def start_backup_stack(start, tmp_path, jobs, extra_services=""):
    ports = {k: free_port() for k in ("backup", "metrics", "alerts")}
    (tmp_path / "pw").write_text(PW)
    stack = write_stack(tmp_path, f"""
data_dir: data
services:
  metrics:
    role: metrics
    listen: ["127.0.0.1:{ports['metrics']}"]
  alerts:
    role: alerts
    listen: ["127.0.0.1:{ports['alerts']}"]
  backup:
    role: backup
    listen: ["127.0.0.1:{ports['backup']}"]
    repository: {{path: repo}}
    password_file: pw
    jobs:
{jobs}
{extra_services}""")
    p = start(["up", "-c", stack])
    for k in ports:
        wait_for(lambda k=k: requests.get(f"http://127.0.0.1:{ports[k]}/-/ready", timeout=1).status_code == 200,
                 timeout=20, what=f"{k} ready")
    return p, stack, ports


def job_state(port, name):
    jobs = requests.get(f"http://127.0.0.1:{port}/api/jobs", timeout=5).json()["jobs"]
    return next(j for j in jobs if j["name"] == name)


def run_job(port, name, timeout=60):
    before = job_state(port, name)["last_run"]
    r = requests.post(f"http://127.0.0.1:{port}/api/jobs/{name}/run", timeout=5)
    assert r.status_code == 202, r.text
    return wait_for(lambda: (lambda j: j if j["last_run"] != before and not j["running"] else None)(
        job_state(port, name)), timeout=timeout, what=f"job {name} done")


def test_service_runs_jobs_reports_and_failover_drill(start, tmp_path):
    p, stack, ports = start_backup_stack(start, tmp_path, """      - name: metrics
        service: metrics
        keep: {last: 3}
      - name: alerts
        service: alerts""")
    am = f"http://127.0.0.1:{ports['alerts']}"
    prom = f"http://127.0.0.1:{ports['metrics']}"
    sil = requests.post(am + "/api/v2/silences", json={
        "matchers": [{"name": "job", "value": "drill", "isRegex": False}], "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "2099-01-01T00:00:00Z", "createdBy": "test", "comment": "failover drill"}, timeout=5).json()
    requests.post(am + "/api/v2/alerts", json=[{"labels": {"alertname": "Drill", "job": "drill"}}], timeout=5)
    # the metrics role scrapes the stack: wait for samples of every service
    wait_for(lambda: len(requests.get(prom + "/api/v1/query", params={"query": "up"}, timeout=5)
                         .json()["data"]["result"]) == 3, timeout=60, what="scrapes")
    t = time.time()
    series = requests.get(prom + "/api/v1/query", params={"query": "up", "time": t}, timeout=5).json()
    names = sorted(s["metric"]["job"] for s in series["data"]["result"])
    j = run_job(ports["backup"], "metrics")
    assert j["last_error"] is None and j["last_snapshot"], j
    j = run_job(ports["backup"], "alerts")
    assert j["last_error"] is None, j
    # the store's frozen copy is released after the backup
    assert os.listdir(tmp_path / "data" / "metrics" / "snapshots") == []
    m = requests.get(f"http://127.0.0.1:{ports['backup']}/metrics", timeout=5).text
    assert 'cairn_backup_runs_total{job="metrics",result="success"} 1' in m
    assert 'cairn_backup_last_success_timestamp_seconds{job="alerts"}' in m
    r = requests.post(f"http://127.0.0.1:{ports['backup']}/api/jobs/nope/run", timeout=5)
    assert r.status_code == 404
    snaps = json.loads(run_cairn(["snapshots", "-c", stack, "--json"], cwd=tmp_path).stdout)
    assert {"service=metrics", "role=metrics"} <= set(snaps[0]["tags"]) or \
        {"service=metrics", "role=metrics"} <= set(snaps[1]["tags"])
    # the drill: stop, wipe, restore, start
    p.signal(signal.SIGTERM)
    p.wait(timeout=20)
    for svc in ("metrics", "alerts"):
        os.rename(tmp_path / "data" / svc, tmp_path / f"{svc}.lost")
    for svc in ("metrics", "alerts"):
        r = run_cairn(["restore", "-c", stack, "--service", svc], cwd=tmp_path, timeout=120)
        assert r.returncode == 0, r.stderr
    # a store is never restored over existing data
    r = run_cairn(["restore", "-c", stack, "--service", "alerts"], cwd=tmp_path)
    assert r.returncode == 1 and "not empty" in r.stderr
    p2 = start(["up", "-c", stack], name="after")
    wait_for(lambda: requests.get(prom + "/-/ready", timeout=1).status_code == 200, timeout=20, what="metrics")
    wait_for(lambda: requests.get(am + "/-/ready", timeout=1).status_code == 200, timeout=20, what="alerts")
    back = requests.get(prom + "/api/v1/query", params={"query": "up", "time": t}, timeout=5).json()
    assert sorted(s["metric"]["job"] for s in back["data"]["result"]) == names
    sils = requests.get(am + "/api/v2/silences", timeout=5).json()
    assert any(s["id"] == sil["silenceID"] and s["comment"] == "failover drill" for s in sils)
    assert (tmp_path / "data" / "alerts" / "nflog.json").exists()
    p2.signal(signal.SIGTERM)


def test_scheduled_job_runs_at_its_minute(start, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    p, stack, ports = start_backup_stack(start, tmp_path, f"""      - name: every
        paths: [{src}]
        schedule: "* * * * *" """)
    # a cron job fires at the next minute boundary (at most 60 s away)
    j = wait_for(lambda: (lambda j: j if j["last_success"] else None)(job_state(ports["backup"], "every")),
                 timeout=75, interval=0.5, what="the scheduled run")
    assert j["last_error"] is None
    snaps = json.loads(run_cairn(["snapshots", "-c", stack, "--json"], cwd=tmp_path).stdout)
    assert any("job=every" in s["tags"] for s in snaps)


def s3_store(start, tmp_path):
    """The s3 role with a bucket "backups"; its key pair in files ak and sk (the
    backup role's access_key_file and secret_key_file) and in restic's environment.
    Returns (process, url, env, its stack file)."""
    port = free_port()
    s3stack = write_stack(tmp_path, f"""
data_dir: data
services:
  s3:
    role: s3
    listen: ["127.0.0.1:{port}"]
""", name="s3.yaml")
    s3 = start(["run", "s3", "-c", s3stack], name="s3")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: requests.get(url + "/-/ready", timeout=1).status_code == 200, what="s3 ready")
    creds = {}
    for line in (tmp_path / "data" / "s3" / "credentials").read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            creds[k.strip()] = v.strip()
    (tmp_path / "ak").write_text(creds["aws_access_key_id"])
    (tmp_path / "sk").write_text(creds["aws_secret_access_key"])
    env = dict(AWS_ACCESS_KEY_ID=creds["aws_access_key_id"], AWS_SECRET_ACCESS_KEY=creds["aws_secret_access_key"])
    subprocess.run(["/usr/bin/aws", "--endpoint-url", url, "s3", "mb", "s3://backups"], check=True,
                   env=dict(os.environ, AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                            AWS_CONFIG_FILE="/dev/null", **env), capture_output=True)
    return s3, url, env, s3stack


def test_s3_repository_restic_reads_it(start, tmp_path):
    _, url, env, _ = s3_store(start, tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    (tmp_path / "pw").write_text(PW)
    stack = write_stack(tmp_path, stack_text(
        repo=f'{{s3: {{endpoint: "{url}", bucket: backups, prefix: cairn, access_key_file: ak, '
             f'secret_key_file: sk}}}}'))
    r = run_cairn(["backup", "-c", stack, "files"], cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    repo = f"s3:{url}/backups/cairn"
    out = restic(repo, "check", "--read-data", pw_file=tmp_path / "pw", env=env)
    assert "no errors were found" in out.stdout
    restic(repo, "restore", "latest", "--target", str(tmp_path / "out"), pw_file=tmp_path / "pw", env=env)
    assert snapshot_of(under(tmp_path / "out", src)) == snapshot_of(src)
    restic(repo, "backup", str(src), pw_file=tmp_path / "pw", env=env)
    r = run_cairn(["restore", "-c", stack, "latest", "--target", str(tmp_path / "out2")], cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert snapshot_of(under(tmp_path / "out2", src)) == snapshot_of(src)
    r = run_cairn(["repo", "check", "-c", stack, "--read-data"], cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_logs_and_traces_stores_failover_drill(start, tmp_path):
    ports = {k: free_port() for k in ("backup", "logs", "traces", "tempo")}
    (tmp_path / "pw").write_text(PW)
    stack = write_stack(tmp_path, f"""
data_dir: data
services:
  logs:
    role: logs
    listen: ["127.0.0.1:{ports['logs']}"]
  traces:
    role: traces
    listen: ["127.0.0.1:{ports['traces']}"]
    tempo: ["127.0.0.1:{ports['tempo']}"]
  backup:
    role: backup
    listen: ["127.0.0.1:{ports['backup']}"]
    repository: {{path: repo}}
    password_file: pw
    jobs:
      - {{name: logs, service: logs}}
      - {{name: traces, service: traces}}
""")
    p = start(["up", "-c", stack])
    logs = f"http://127.0.0.1:{ports['logs']}"
    tempo = f"http://127.0.0.1:{ports['tempo']}"
    for u in (logs + "/ready", tempo + "/ready", f"http://127.0.0.1:{ports['backup']}/-/ready"):
        wait_for(lambda u=u: requests.get(u, timeout=1).status_code == 200, timeout=20, what=u)
    t = time.time_ns()
    r = requests.post(logs + "/loki/api/v1/push", timeout=5, json={
        "streams": [{"stream": {"app": "drill"}, "values": [[str(t + i), f"line {i}"] for i in range(100)]}]})
    assert r.status_code == 204
    tid = "0af7651916cd43dd8448eb211c80319c"
    span = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "drill"}}]},
                               "scopeSpans": [{"spans": [{"traceId": tid, "spanId": "b7ad6b7169203331", "name": "GET /",
                                                          "kind": 2, "startTimeUnixNano": str(t),
                                                          "endTimeUnixNano": str(t + 1000000)}]}]}]}
    r = requests.post(f"http://127.0.0.1:{ports['traces']}/v1/traces", json=span, timeout=5)
    assert r.status_code == 200
    for job in ("logs", "traces"):
        j = run_job(ports["backup"], job)
        assert j["last_error"] is None and j["last_snapshot"], j
    p.signal(signal.SIGTERM)
    p.wait(timeout=20)
    for svc in ("logs", "traces"):
        os.rename(tmp_path / "data" / svc, tmp_path / f"{svc}.lost")
        r = run_cairn(["restore", "-c", stack, "--service", svc], cwd=tmp_path, timeout=120)
        assert r.returncode == 0, r.stderr
    start(["up", "-c", stack], name="after")
    wait_for(lambda: requests.get(logs + "/ready", timeout=1).status_code == 200, timeout=20, what="logs")
    wait_for(lambda: requests.get(tempo + "/ready", timeout=1).status_code == 200, timeout=20, what="traces")
    r = requests.get(logs + "/loki/api/v1/query_range", timeout=5, params={
        "query": '{app="drill"}', "start": str(t - 10**9), "end": str(t + 10**9), "limit": 1000})
    assert sum(len(s["values"]) for s in r.json()["data"]["result"]) == 100
    r = requests.get(f"{tempo}/api/traces/{tid}", timeout=5)
    assert r.status_code == 200 and "GET /" in r.text


def test_s3_failing_midway_is_reported_and_nothing_is_lost(start, tmp_path):
    s3, url, env, s3stack = s3_store(start, tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"f{i:02}.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    (tmp_path / "pw").write_text(PW)
    stack = write_stack(tmp_path, stack_text(
        repo=f'{{s3: {{endpoint: "{url}", bucket: backups, prefix: cairn, access_key_file: ak, '
             f'secret_key_file: sk}}}}'))
    assert run_cairn(["repo", "init", "-c", stack], cwd=tmp_path).returncode == 0
    objects = tmp_path / "data" / "s3"
    before = sum(len(fs) for _, _, fs in os.walk(objects))
    p = subprocess.Popen([CAIRN, "backup", "-c", stack, "files", "-q"], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        # the store dies once the first packs are in
        wait_for(lambda: sum(len(fs) for _, _, fs in os.walk(objects)) >= before + 2, timeout=60, interval=0.02,
                 what="packs uploaded")
        s3.signal(signal.SIGKILL)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 1
    assert "s3:" in err and ("refused" in err or "reset" in err or "failed" in err.lower()), err
    # the store comes back on the same data: the repository is sound and the next
    # run completes it
    s3b = start(["run", "s3", "-c", s3stack], name="s3-again")
    wait_for(lambda: requests.get(url + "/-/ready", timeout=1).status_code == 200, what="s3 back")
    repo = f"s3:{url}/backups/cairn"
    out = restic(repo, "--no-lock", "check", pw_file=tmp_path / "pw", env=env, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    r = run_cairn(["backup", "-c", stack, "files"], cwd=tmp_path, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "no errors were found" in restic(repo, "check", "--read-data", pw_file=tmp_path / "pw", env=env).stdout
    r = run_cairn(["restore", "-c", stack, "latest", "--target", str(tmp_path / "out")], cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert snapshot_of(under(tmp_path / "out", src)) == snapshot_of(src)
    s3b.signal(signal.SIGTERM)


def test_etcd_snapshot_backed_up_and_restored_into_a_new_etcd(start, tmp_path):
    """The issue's cluster-state part: Debian's etcd 3.4, data written by etcdctl,
    backed up through the v3 maintenance API, restored with etcdctl, read back."""
    cport, pport = free_port(), free_port()
    env = dict(os.environ, ETCDCTL_API="3")

    def etcd(datadir, name):
        cmd = ["etcd", "--name", "drill", "--data-dir", str(datadir),
               "--listen-client-urls", f"http://127.0.0.1:{cport}",
               "--advertise-client-urls", f"http://127.0.0.1:{cport}",
               "--listen-peer-urls", f"http://127.0.0.1:{pport}",
               "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
               "--initial-cluster", f"drill=http://127.0.0.1:{pport}"]
        log = open(tmp_path / f"{name}.log", "wb")
        p = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        wait_for(lambda: subprocess.run(["etcdctl", "--endpoints", f"http://127.0.0.1:{cport}", "endpoint",
                                         "health"], env=env, capture_output=True).returncode == 0,
                 timeout=30, what=f"{name} healthy")
        return p, log

    def ctl(*args):
        r = subprocess.run(["etcdctl", "--endpoints", f"http://127.0.0.1:{cport}"] + list(args), env=env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout

    p, log = etcd(tmp_path / "etcd1", "etcd1")
    try:
        for i in range(200):
            ctl("put", f"/registry/pods/p{i:03}", f"spec-{i}-" + "x" * 200)
        (tmp_path / "pw").write_text(PW)
        stack = write_stack(tmp_path, stack_text(extra_jobs=f"""      - name: cluster
        etcd: "http://127.0.0.1:{cport}"
        keep: {{last: 2}}"""))
        for _ in range(3):
            r = run_cairn(["backup", "-c", stack, "cluster"], cwd=tmp_path, timeout=120)
            assert r.returncode == 0, r.stderr
        ctl("put", "/registry/pods/p000", "changed after the backup")
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=20)
        log.close()
    snaps = json.loads(run_cairn(["snapshots", "-c", stack, "--json"], cwd=tmp_path).stdout)
    assert len(snaps) == 2 and all("source=etcd" in s["tags"] for s in snaps)
    assert "no errors were found" in restic(tmp_path / "repo", "check", "--read-data", pw_file=tmp_path / "pw").stdout
    r = run_cairn(["restore", "-c", stack, "latest", "--target", str(tmp_path / "out")], cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "out") for f in fs]
    assert len(files) == 1 and files[0].endswith("etcd-snapshot.db")
    r = subprocess.run(["etcdctl", "snapshot", "restore", files[0], "--data-dir", str(tmp_path / "etcd2"),
                        "--name", "drill", "--initial-cluster", f"drill=http://127.0.0.1:{pport}",
                        "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    p2, log2 = etcd(tmp_path / "etcd2", "etcd2")
    try:
        out = ctl("get", "--prefix", "/registry/pods/", "--keys-only")
        assert len([k for k in out.split() if k]) == 200
        assert ctl("get", "/registry/pods/p000", "--print-value-only").strip() == "spec-0-" + "x" * 200
        assert ctl("get", "/registry/pods/p199", "--print-value-only").strip() == "spec-199-" + "x" * 200
    finally:
        os.killpg(p2.pid, signal.SIGTERM)
        p2.wait(timeout=20)
        log2.close()


def test_etcd_unreachable_is_a_clear_error(tmp_path):
    (tmp_path / "pw").write_text(PW)
    stack = write_stack(tmp_path, stack_text(extra_jobs=f"""      - name: cluster
        etcd: "http://127.0.0.1:{free_port()}\""""))
    r = run_cairn(["backup", "-c", stack, "cluster"], cwd=tmp_path, timeout=60)
    assert r.returncode == 1 and "etcd:" in r.stderr and "refused" in r.stderr.lower(), r.stderr
