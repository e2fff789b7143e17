"""Exporter benchmark at 1000 programs, everything against the same supervisord in one run.

Scrape p50 of lookout-exporter (with and without resource metrics), of a bare
getAllProcessInfo call, and of Debian's prometheus-node-exporter --collector.supervisord
(which has no resource metrics). supervisord runs at loglevel=blather, which logs every XML-RPC
call: we count the calls made while lookout-exporter is being scraped.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.harness import Supervisor, ensure_debian_tool, free_port

from .listener_bench import _pct, rss_mb
from .patience import PATIENCE

GROUPS, PER_GROUP = 10, 100  # 1000 programs
SCRAPES = 30


def _scrape_p50(url: str, n: int = SCRAPES) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as r:
            r.read()
        times.append(time.perf_counter() - t)
    return _pct(times, 50)


def _start(cmd: list[str], url: str, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "ab"))  # noqa: SIM115

    def ready() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                return r.status == 200
        except OSError:
            return False

    PATIENCE.wait(ready, 60, f"{cmd[0]} to serve", interval=0.3)
    return proc


def run() -> dict[str, float]:
    node_exporter = ensure_debian_tool("prometheus-node-exporter", "prometheus-node-exporter")
    root = Path(tempfile.mkdtemp(prefix="lookout-bench-exp-"))
    programs = "\n".join(
        f"[program:pool{g}]\ncommand=sleep 100000\nprocess_name=%(program_name)s_%(process_num)03d\n"
        f"numprocs={PER_GROUP}\nstartsecs=0\n"
        for g in range(GROUPS)
    )
    sup = Supervisor(root, programs, {"listener": {"log_level": "info"}})
    sup.conf.write_text(sup.conf.read_text().replace("loglevel=info", "loglevel=blather"))
    sup.start()
    procs: list[subprocess.Popen] = []
    try:
        total = GROUPS * PER_GROUP + 1

        def running() -> int:
            return sum(p["statename"] == "RUNNING" for p in PATIENCE.call(sup, "supervisor.getAllProcessInfo"))

        PATIENCE.wait(lambda: running() == total, 120, "1000 programs RUNNING", interval=1)
        with sup.db() as c:  # the listener has every process and has reconciled
            PATIENCE.wait(lambda: c.execute("SELECT COUNT(*) FROM processes WHERE state = 'RUNNING'").fetchone()[0]
                          >= total, 120, "listener caught up", interval=0.5)
        results: dict[str, float] = {}
        t = []
        for _ in range(10):
            start = time.perf_counter()
            PATIENCE.call(sup, "supervisor.getAllProcessInfo")
            t.append(time.perf_counter() - start)
        results["getallprocessinfo_p50"] = _pct(t, 50)

        for label, extra in (("lookout_res", []), ("lookout_nores", ["--no-resource-metrics"])):
            port = free_port()
            url = f"http://127.0.0.1:{port}/metrics"
            proc = _start([sys.executable, "-m", "lookout.exporter", "-c", str(sup.config_path), "--listen",
                           f"127.0.0.1:{port}", *extra], url, root / f"{label}.log")
            procs.append(proc)
            calls_before = sup.log().count("XML-RPC method called")
            results[f"{label}_p50"] = _scrape_p50(url)
            results[f"{label}_rpc_calls"] = sup.log().count("XML-RPC method called") - calls_before
            results[f"{label}_rss"] = rss_mb(proc.pid)
            body = urllib.request.urlopen(url, timeout=60).read().decode()
            results[f"{label}_source_store"] = float('lookout_exporter_source{source="store"} 1' in body)

        port = free_port()
        url = f"http://127.0.0.1:{port}/metrics"
        cmd = [node_exporter, "--collector.disable-defaults", "--collector.supervisord",
               f"--collector.supervisord.url=unix://{sup.sock}", f"--web.listen-address=127.0.0.1:{port}"]
        procs.append(_start(cmd, url, root / "node_exporter.log"))
        body = urllib.request.urlopen(url, timeout=60).read().decode()
        assert "node_supervisord_state{" in body, body[-2000:]  # it really read the 1000 programs
        results["node_exporter_p50"] = _scrape_p50(url, 10)
        return results
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        sup.stop()
