from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from .harness import ExporterProcess, Supervisor, Webhook, ensure_debian_tool


@pytest.fixture
def webhook():
    hook = Webhook().start()
    yield hook
    hook.stop()


@pytest.fixture
def supervisor_factory(tmp_path):
    started: list[Supervisor] = []
    lock = threading.Lock()  # the fleet test makes hosts from several threads

    def make(programs: str, settings: dict, **kwargs) -> Supervisor:
        with lock:
            root = tmp_path / f"s{len(started)}"
            root.mkdir(exist_ok=True)
            started.append(None)  # type: ignore[arg-type]  # reserves the index
            index = len(started) - 1
        sup = Supervisor(root, programs, settings, **kwargs)
        started[index] = sup
        return sup

    yield make
    try:
        for sup in started:
            if sup is not None and sup.invariants and sup.proc is not None:
                sup.check_store_invariants()
    finally:
        for sup in started:
            if sup is not None:
                sup.stop()


@pytest.fixture(scope="session")
def built_dist(tmp_path_factory) -> Path:
    """The wheel and sdist of the working tree (`python -m build`), built once per test run: the
    xdist workers share a directory, the first builds under a lock, the others reuse its result.
    Built from a copy: parallel builds must not share build/ and egg-info."""
    import fcntl
    import shutil
    import subprocess
    import sys

    from .harness import REPO

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # this run's, all workers
    out = shared / "built-dist"
    with open(shared / "built-dist.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "done").exists():
            shutil.rmtree(out, ignore_errors=True)
            tree = shared / "built-dist-src"
            shutil.rmtree(tree, ignore_errors=True)
            shutil.copytree(REPO, tree, ignore=shutil.ignore_patterns(
                ".git", ".venv", ".demo", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"))
            result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(tree)],
                                    capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            (out / "done").touch()
    return out


@pytest.fixture(scope="session")
def promtool() -> str:
    return ensure_debian_tool("promtool", "prometheus")


def fast_alerts(webhook: Webhook, **alerts) -> dict:
    """Test-speed timers; everything else as shipped."""
    return {
        "notify": {"urls": [webhook.url()], "retry_initial": "500ms", "retry_max": "2s"},
        "alerts": {"group_wait": "1s", "group_interval": "0s", "stable_after": "3s", "exit_grace": "2s", **alerts},
        "listener": {"log_level": "debug"},
    }


@pytest.fixture
def alertmanager(tmp_path, webhook):
    """A real Alertmanager (Debian's prometheus-alertmanager) delivering to the webhook at /am."""
    import subprocess

    from .harness import free_port, wait_for

    binary = ensure_debian_tool("prometheus-alertmanager", "prometheus-alertmanager")
    port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text(f"""\
route:
  receiver: hook
  group_by: [alertname, instance]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:{webhook.port}/am
        send_resolved: true
""")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.path={tmp_path / 'am-data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "alertmanager.log", "ab"),  # noqa: SIM115
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for(ready, 30, "alertmanager ready")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def exporter_factory():
    started: list[ExporterProcess] = []

    def make(sup, *args: str, scheme: str = "http") -> ExporterProcess:
        e = ExporterProcess(sup, *args, scheme=scheme).start()
        started.append(e)
        return e

    yield make
    for e in started:
        e.stop()


def pytest_configure(config) -> None:  # noqa: ANN001
    from .matrix.selection import pin_day

    config.addinivalue_line("markers", "matrix: a capability x perturbation cell (tests/matrix; `make matrix`)")
    config.addinivalue_line("markers", "long: runs 25 s or more (a window the test observes); started first")
    pin_day(os.environ)


def pytest_collection_modifyitems(items) -> None:  # noqa: ANN001
    """Long tests first (a stable sort, the same on every xdist worker): started last, one of them
    would keep the run going for a minute after the others are done."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001
    """Lines tests report with record_property("report", ...) (the fleet test's numbers), shown at
    the end of `make test`, also from xdist workers; then which matrix cells ran, and how they did."""
    from .matrix.perturbations import PERTURBATIONS
    from .matrix.selection import summary
    from .matrix.test_matrix import CAPABILITIES

    lines = [value for reports in terminalreporter.stats.values() for r in reports
             if getattr(r, "when", "") == "call" for key, value in getattr(r, "user_properties", ())
             if key == "report"]
    if lines:
        terminalreporter.write_sep("-", "reported by tests")
        for line in lines:
            terminalreporter.write_line(line)
    reports = [r for reports in terminalreporter.stats.values() for r in reports]
    matrix = summary(reports, list(CAPABILITIES), list(PERTURBATIONS))
    if matrix:
        terminalreporter.write_sep("-", "capability x perturbation matrix")
        for line in matrix:
            terminalreporter.write_line(line)
