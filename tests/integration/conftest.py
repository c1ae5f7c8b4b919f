"""Helpers for cairn's integration tests: real processes, real sockets, bounded waits."""
import os
import signal
import socket
import subprocess
import time

import pytest
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAIRN = os.environ.get("CAIRN_BIN") or os.path.join(ROOT, "build", "cairn")


def wait_for(pred, timeout=10.0, interval=0.05, what="condition"):
    """Polls pred() until it returns a truthy value or the bound passes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except (OSError, requests.RequestException) as e:
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def make_cert(tmp_path, cn):
    """A self-signed EC certificate for cn (also its subjectAltName) and its key."""
    cert, key = tmp_path / f"{cn}.pem", tmp_path / f"{cn}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={cn}",
                    "-addext", f"subjectAltName=DNS:{cn}"], check=True, capture_output=True)
    return cert, key


def free_port():
    """A loopback port free for both TCP and UDP at the time of asking (the DNS role
    listens on both; a port free only for TCP can be a resolver's UDP source port)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise AssertionError("no port free for both TCP and UDP")


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); look at its state
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Proc:
    """A cairn process with stdout/stderr captured to files."""

    def __init__(self, args, cwd, name="cairn"):
        self.cwd = cwd
        self.out_path = os.path.join(cwd, f"{name}.out")
        self.err_path = os.path.join(cwd, f"{name}.err")
        self.out = open(self.out_path, "wb")
        self.err = open(self.err_path, "wb")
        self.p = subprocess.Popen([CAIRN] + args, cwd=cwd, stdout=self.out, stderr=self.err,
                                  start_new_session=True)
        self.pid = self.p.pid

    def stdout(self):
        with open(self.out_path, errors="replace") as f:
            return f.read()

    def stderr(self):
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def signal(self, sig):
        if self.p.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout):
        return self.p.wait(timeout=timeout)

    def cleanup(self):
        if self.p.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                # the process group this test created: the supervisor and its children
                os.killpg(self.pid, signal.SIGKILL)
                self.p.wait(timeout=5)
        self.out.close()
        self.err.close()
        # a sanitizer build reports leaks and errors on stderr at exit: they fail the test
        report = self.stderr()
        # shown by pytest only when the test fails: what each process said last
        print(f"--- {self.err_path} (last 2000 bytes)\n{report[-2000:]}")
        for marker in ("ERROR: LeakSanitizer", "ERROR: AddressSanitizer", "runtime error:"):
            if marker in report:
                i = report.index(marker)
                raise AssertionError(f"{marker} in {self.err_path}:\n{report[i:i + 3000]}")


@pytest.fixture
def start(tmp_path):
    procs = []

    def _start(args, name="cairn"):
        p = Proc(args, str(tmp_path), name)
        procs.append(p)
        return p

    yield _start
    for p in procs:
        p.cleanup()


def write_stack(tmp_path, text, name="stack.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def run_cairn(args, cwd=None, timeout=20):
    return subprocess.run([CAIRN] + args, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
