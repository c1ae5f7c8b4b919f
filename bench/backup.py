#!/usr/bin/python3
"""make bench-backup: cairn's backup role against restic 0.14, side by side on the
same data, each into a repository of its own (local directory, zstd, the same
chunker parameters).

The data set (made once under $BENCH_DIR, default /tmp/cairn-bench-backup; about
SCALE GB, default 3):
  - a source tree: copies of /usr/include and /usr/share/doc (many small text files);
  - TSDB-like blocks: 512 KiB "chunks" files of delta-encoded samples (compress
    about 3:1, as Prometheus chunks do after zstd);
  - incompressible random files (256 MiB each);
  - compressible logs (access-log lines with varying fields).
Measured, each the median of RUNS (3) runs, restic's cache cleared before each:
  - first backup into an empty repository: MB/s of source data;
  - second backup after changing 1% (appended log lines, rewritten regions of some
    random files, a few new source files): seconds;
  - repository size after both;
  - restore of the second snapshot into an empty directory: MB/s;
  - peak RSS of each command (wait4's ru_maxrss).
Page cache: the data set is read once before timing and fits in memory, so both
tools read it from the cache; the machine's 2 cores are shared by each tool's
threads (restic runs GOMAXPROCS=2, cairn one worker per CPU). Restores go to a
tmpfs (as root): on this VM's ext4, creating files where many were just deleted
(the previous run's restore) costs more than the restore itself (ext4's
recently_deleted inode scan), which measures the file system, not the tools.
"""
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAIRN = os.path.join(ROOT, "build", "cairn")
RUNS = int(os.environ.get("RUNS", "3"))
SCALE = float(os.environ.get("SCALE", "3"))
BENCH = os.environ.get("BENCH_DIR", "/tmp/cairn-bench-backup")
PW = "bench password"
RESTORE_DIR = None


def run(cmd, env=None, cwd=None):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate()
    el = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{out.decode()[-2000:]}\n{err.decode()[-2000:]}")
    return el


def timed(cmd, env=None, cwd=None):
    """(seconds, peak RSS MiB) of one command, via wait4."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pid, status, ru = os.wait4(p.pid, 0)
    el = time.monotonic() - t0
    err = p.stderr.read()
    p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{err.decode()[-3000:]}")
    return el, ru.ru_maxrss / 1024


def du(path):
    """Bytes in regular files (symlinks not followed)."""
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(path) for f in fs
               if not os.path.islink(os.path.join(d, f)))


def make_data(data):
    """The data set; a marker file says it is complete."""
    if os.path.exists(os.path.join(data, ".complete")):
        return
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    rnd = random.Random(42)
    gb = SCALE * (1 << 30)
    print(f"making the data set ({SCALE:g} GB) in {data} ...", flush=True)
    # source tree
    for src in ("/usr/include", "/usr/share/doc"):
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(data, "tree", src.strip("/").replace("/", "_")), symlinks=True,
                            ignore_dangling_symlinks=True)
    # TSDB-like chunk files
    tsdb = os.path.join(data, "tsdb")
    os.makedirs(tsdb)
    n = int(gb * 0.2 / (512 * 1024))
    for i in range(n):
        b = bytearray()
        v = rnd.randrange(1000)
        while len(b) < 512 * 1024:
            v += rnd.choice((0, 0, 0, 1, 1, 2, -1, 5))
            t = rnd.randrange(14990, 15010)
            b += (t & 0xFFFF).to_bytes(2, "little") + (v & 0xFFFFFF).to_bytes(3, "little") + bytes([rnd.randrange(4)])
        d = os.path.join(tsdb, f"block{i // 64:03}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"{i % 64:06}"), "wb") as f:
            f.write(b[:512 * 1024])
    # incompressible
    rdir = os.path.join(data, "random")
    os.makedirs(rdir)
    for i in range(max(1, int(gb * 0.35 / (256 << 20)))):
        with open(os.path.join(rdir, f"r{i}.bin"), "wb") as f:
            for _ in range(256):
                f.write(os.urandom(1 << 20))
    # logs
    ldir = os.path.join(data, "logs")
    os.makedirs(ldir)
    paths = ["/", "/index.html", "/api/v1/users", "/static/app.js", "/img/logo.png", "/login", "/cart"]
    agents = ["Mozilla/5.0 (X11; Linux x86_64)", "curl/7.88.1", "Go-http-client/1.1", "python-requests/2.28"]
    for i in range(max(1, int(gb * 0.3 / (128 << 20)))):
        with open(os.path.join(ldir, f"access{i}.log"), "w") as f:
            written = 0
            t = 1700000000 + i * 86400
            lines = []
            while written < (128 << 20):
                t += rnd.randrange(3)
                line = (f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)} - - [{t}] "
                        f"\"GET {rnd.choice(paths)}?id={rnd.randrange(100000)} HTTP/1.1\" "
                        f"{rnd.choice((200, 200, 200, 304, 404, 500))} {rnd.randrange(50000)} "
                        f"\"{rnd.choice(agents)}\" rt={rnd.random():.4f}\n")
                lines.append(line)
                written += len(line)
                if len(lines) == 10000:
                    f.write("".join(lines))
                    lines = []
            f.write("".join(lines))
    open(os.path.join(data, ".complete"), "w").close()


def change_one_percent(data, gen):
    """Changes about 1% of the bytes: appended log lines, regions of random files
    rewritten, new small files."""
    rnd = random.Random(1000 + gen)
    total = du(data)
    budget = total // 100
    logs = sorted(os.listdir(os.path.join(data, "logs")))
    with open(os.path.join(data, "logs", logs[-1]), "a") as f:
        chunk = "".join(f"10.0.0.{i % 256} - - [x] \"GET /new/{gen}/{i}\" 200 {i}\n" for i in range(20000))
        while budget > 0 and budget > total // 300:
            f.write(chunk)
            budget -= len(chunk)
    rfiles = sorted(os.listdir(os.path.join(data, "random")))
    for k in range(4):
        p = os.path.join(data, "random", rfiles[k % len(rfiles)])
        with open(p, "r+b") as f:
            f.seek(rnd.randrange(200 << 20))
            f.write(os.urandom(max(1, budget // 4)))
    newdir = os.path.join(data, "tree", f"new{gen}")
    os.makedirs(newdir, exist_ok=True)
    for i in range(50):
        with open(os.path.join(newdir, f"f{i}.txt"), "w") as f:
            f.write(f"new file {gen} {i}\n" * 100)


def one_run(i, data, work):
    """Both tools once on a fresh copy of the data; returns {tool: {metric: value}}."""
    res = {}
    srcbytes = du(data)
    for tool in ("restic", "cairn"):
        repo = os.path.join(work, f"repo-{tool}")
        out = os.path.join(RESTORE_DIR, f"restore-{tool}")
        cache = os.path.join(work, "restic-cache")
        shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        pwfile = os.path.join(work, "pw")
        with open(pwfile, "w") as f:
            f.write(PW)
        env = dict(os.environ, RESTIC_PASSWORD_FILE=pwfile, RESTIC_CACHE_DIR=cache, GOMAXPROCS="2")
        r = {}
        if tool == "restic":
            run(["restic", "-r", repo, "init"], env=env)
            shutil.rmtree(cache, ignore_errors=True)
            t, rss = timed(["restic", "-r", repo, "backup", "-q", data], env=env)
        else:
            stack = os.path.join(work, "stack.yaml")
            with open(stack, "w") as f:
                f.write(f"services:\n  backup:\n    role: backup\n    listen: [\"127.0.0.1:19595\"]\n"
                        f"    repository: {{path: {repo}}}\n    password_file: {pwfile}\n"
                        f"    jobs:\n      - {{name: data, paths: [{data}]}}\n")
            run([CAIRN, "repo", "init", "-c", stack])
            t, rss = timed([CAIRN, "backup", "-c", stack, "data", "-q"])
        r["first_mbs"] = srcbytes / t / 1e6
        r["first_rss"] = rss
        change_one_percent(data, i * 2 + (tool == "cairn"))
        shutil.rmtree(cache, ignore_errors=True)
        if tool == "restic":
            t, rss = timed(["restic", "-r", repo, "backup", "-q", data], env=env)
        else:
            t, rss = timed([CAIRN, "backup", "-c", stack, "data", "-q"])
        r["second_s"] = t
        r["second_rss"] = rss
        r["repo_mb"] = du(repo) / 1e6
        shutil.rmtree(cache, ignore_errors=True)
        if tool == "restic":
            t, rss = timed(["restic", "-r", repo, "restore", "latest", "--target", out], env=env)
        else:
            t, rss = timed([CAIRN, "restore", "-c", stack, "latest", "--target", out, "-q"])
        r["restore_mbs"] = du(data) / t / 1e6
        r["restore_rss"] = rss
        shutil.rmtree(out, ignore_errors=True)
        res[tool] = r
        print(f"  run {i + 1} {tool:6}: first {r['first_mbs']:.0f} MB/s (RSS {r['first_rss']:.0f} MiB), "
              f"second {r['second_s']:.2f} s, repo {r['repo_mb']:.0f} MB, restore {r['restore_mbs']:.0f} MB/s "
              f"(RSS {r['restore_rss']:.0f} MiB)", flush=True)
    return res


def main():
    if not shutil.which("restic"):
        raise SystemExit("bench-backup needs restic (apt-get install restic)")
    ver = subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.strip()
    base = os.path.join(BENCH, "base")
    make_data(base)
    work = tempfile.mkdtemp(prefix="cairn-bb-", dir=BENCH)
    data = os.path.join(work, "data")
    global RESTORE_DIR
    RESTORE_DIR = os.path.join(work, "restore-fs")
    os.makedirs(RESTORE_DIR)
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={int(SCALE * 2 + 1)}g", "tmpfs", RESTORE_DIR]).returncode == 0
    print(f"restores into {'a tmpfs' if mounted else 'the work directory (not root: no tmpfs)'}", flush=True)
    print(f"{ver}; data set {du(base) / 1e9:.2f} GB; {RUNS} runs", flush=True)
    runs = []
    try:
        for i in range(RUNS):
            shutil.rmtree(data, ignore_errors=True)
            shutil.copytree(base, data, symlinks=True)
            du(data)
            runs.append(one_run(i, data, work))
    finally:
        if mounted:
            subprocess.run(["umount", RESTORE_DIR])
        shutil.rmtree(work, ignore_errors=True)
    med = {t: {k: statistics.median(r[t][k] for r in runs) for k in runs[0][t]} for t in ("restic", "cairn")}
    c, r = med["cairn"], med["restic"]
    print("\nmedians            restic      cairn     ratio (goal)")
    rows = [("first backup MB/s", "first_mbs", "{:.0f}", c["first_mbs"] / r["first_mbs"], ">= 1.5"),
            ("second backup s", "second_s", "{:.2f}", r["second_s"] / c["second_s"], ">= 1.5 (restic/cairn)"),
            ("repository MB", "repo_mb", "{:.0f}", c["repo_mb"] / r["repo_mb"], "<= 1.02"),
            ("restore MB/s", "restore_mbs", "{:.0f}", c["restore_mbs"] / r["restore_mbs"], ">= 1.5"),
            ("peak RSS backup MiB", "first_rss", "{:.0f}", c["first_rss"] / r["first_rss"], "<= 0.5"),
            ("peak RSS 2nd MiB", "second_rss", "{:.0f}", c["second_rss"] / r["second_rss"], "<= 0.5"),
            ("peak RSS restore MiB", "restore_rss", "{:.0f}", c["restore_rss"] / r["restore_rss"], "<= 0.5")]
    for name, k, fmt, ratio, goal in rows:
        print(f"{name:20} {fmt.format(r[k]):>8} {fmt.format(c[k]):>10}   {ratio:.2f}x ({goal})")


if __name__ == "__main__":
    sys.exit(main())
