"""The command line: commands, usage errors, exit codes, `cairn check` messages."""
from conftest import run_cairn, write_stack


def test_version_and_help():
    r = run_cairn(["version"])
    assert r.returncode == 0
    assert r.stdout.startswith("cairn ")
    r = run_cairn(["help"])
    assert r.returncode == 0
    for cmd in ("up", "run", "check", "config", "version", "help"):
        assert f"cairn {cmd}" in r.stdout
    assert "demo-app" in r.stdout
    r = run_cairn(["help", "check"])
    assert r.returncode == 0 and "usage: cairn check" in r.stdout
    r = run_cairn(["up", "--help"])
    assert r.returncode == 0 and "usage: cairn up" in r.stdout


def test_usage_errors_exit_2():
    assert run_cairn([]).returncode == 2
    r = run_cairn(["frobnicate"])
    assert r.returncode == 2 and "unknown command" in r.stderr
    r = run_cairn(["check", "--bogus"])
    assert r.returncode == 2 and "unknown option --bogus" in r.stderr
    r = run_cairn(["check", "-c"])
    assert r.returncode == 2 and "needs a file name" in r.stderr
    r = run_cairn(["run"])
    assert r.returncode == 2 and "exactly one SERVICE" in r.stderr
    r = run_cairn(["run", "nosuch"])
    assert r.returncode == 2 and 'no service named "nosuch"' in r.stderr and "app-1" in r.stderr
    r = run_cairn(["config", "nope"])
    assert r.returncode == 2
    r = run_cairn(["help", "nope"])
    assert r.returncode == 2


def test_default_stack_is_valid_and_checkable(tmp_path):
    r = run_cairn(["config", "default"])
    assert r.returncode == 0
    path = write_stack(tmp_path, r.stdout)
    c = run_cairn(["check", "-c", path])
    assert c.returncode == 0, c.stderr
    assert "OK, 15 services" in c.stdout and "alerts (alerts)" in c.stdout and "traces (traces)" in c.stdout and "console (ui)" in c.stdout
    assert "lb (edge)" in c.stdout and "cdn (edge)" in c.stdout
    assert "app-1 (demo-app)" in c.stdout
    assert run_cairn(["check"]).returncode == 0


def test_check_reports_every_error_with_location(tmp_path):
    path = write_stack(tmp_path, """\
data_dir: data
log: {level: loud}
services:
  web:
    role: demo-app
    listen: ["127.0.0.1:8080", "localhost:80"]
    latency: 2 seconds
    error_rate: 1.5
    colour: blue
  db:
    role: database
""")
    r = run_cairn(["check", "-c", path])
    assert r.returncode == 2
    err = r.stderr
    assert f"{path}:2:14: log.level: expected one of debug, info, warn, error" in err
    assert f'{path}:6:32: services.web.listen[1]: expected an address like 127.0.0.1:8080' in err
    assert f'{path}:7:14: services.web.latency: expected a duration like 500ms' in err
    assert f'{path}:8:17: services.web.error_rate: expected a number from 0 to 1' in err
    assert f'{path}:9:5: services.web: unknown key "colour"' in err
    assert f'{path}:11:11: services.db.role: unknown role "database"' in err
    assert "6 errors" in err


def test_check_yaml_syntax_and_missing_file(tmp_path):
    path = write_stack(tmp_path, "services:\n  a: [1, 2\n  b: 3\n")
    r = run_cairn(["check", "-c", path])
    assert r.returncode == 2
    assert f"{path}:" in r.stderr and "YAML syntax error" in r.stderr
    r = run_cairn(["check", "-c", str(tmp_path / "missing.yaml")])
    assert r.returncode == 2 and "cannot open" in r.stderr


def test_check_sizes_durations_addresses_strict(tmp_path):
    path = write_stack(tmp_path, """\
services:
  a: {role: demo-app, listen: ["[::1]:53", "127.0.0.1:0"], threads: 300, latency: 1.5s}
  b: {role: demo-app, listen: "127.0.0.1:9999", latency: 1h30m, healthy: maybe}
""")
    r = run_cairn(["check", "-c", path])
    assert r.returncode == 2
    assert "services.a.listen[1]" in r.stderr
    assert "services.a.threads: expected an integer from 1 to 256, got 300" in r.stderr
    assert 'services.a.latency: expected a duration' in r.stderr
    assert 'services.b.healthy: expected true or false, got "maybe"' in r.stderr
    assert "services.b.latency" not in r.stderr
    assert "services.a.listen[0]" not in r.stderr
