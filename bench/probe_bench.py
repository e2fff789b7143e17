"""Health probes under load: 200 HTTP probes with period 1 s (two per process of a 100-process
pool, "steady") against a local HTTP server in this script, which timestamps every request.

drain     events/s of lookout draining a backlog (the "flap" pool stopped and started) while the
          200 probes run on "steady", against the minimal READY/OK listener draining the same
          backlog (same supervisord, same run)
cpu       the listener's CPU time over 20 s of 200 probes/s and no events, as a share of one core
lateness  how late each probe run started against its schedule, as the listener's scheduler measures
          it (meta probe_lateness_p95), and where the requests arrive: runs of one probe should be
          exactly one period apart; per probe, lateness_k = (t_k - k x period) - min_j(t_j - j x period)
          (so it also holds the connect time)
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.harness import free_port

from .listener_bench import POOL, _flap_supervisor, _pct, _settle, drain_rates
from .patience import PATIENCE

PERIOD = 1.0


class Recorder:
    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                at = time.time()
                with recorder.lock:
                    recorder.arrivals.setdefault(self.path, []).append(at)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        # A deep accept backlog: runs are spread over the period, but a SYN dropped by a full backlog
        # of 5 (the standard library's default) is retried a second later, which would be our lateness.
        server_class = type("RecorderServer", (ThreadingHTTPServer,), {"request_queue_size": 1024})
        self.server = server_class(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.arrivals.values())

    def lateness(self, since: float) -> list[float]:
        out = []
        with self.lock:
            series = [[t for t in times if t >= since] for times in self.arrivals.values()]
        for times in series:
            if len(times) < 3:
                continue
            offsets = [t - k * PERIOD for k, t in enumerate(times)]
            base = min(offsets)
            out.extend(o - base for o in offsets)
        return out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(events: int = 30_000) -> dict[str, float]:
    recorder = Recorder()
    url = f"http://127.0.0.1:{recorder.port}"
    probes = [{"match": "steady:*", "name": name, "http": {"url": f"{url}/{name}/{{name}}"}, "period": "1s",
               "timeout": "1s"} for name in ("a", "b")]
    root = Path(tempfile.mkdtemp(prefix="lookout-bench-probes-"))
    steady = f"[program:steady]\ncommand=sleep 100000\nprocess_name=%(program_name)s_%(process_num)03d\n" \
             f"numprocs={POOL}\nstartsecs=0\n\n"
    sup, report = _flap_supervisor(root, {"probes": probes}, steady)
    try:
        _settle(sup, report)
        PATIENCE.wait(lambda: len(recorder.arrivals) >= 2 * POOL, 60, "every probe running", interval=0.5)
        results = drain_rates(sup, report, events)

        # CPU and lateness at steady state: no events, 200 probes a second.
        lookout_pid = PATIENCE.call(sup, "supervisor.getProcessInfo", "lookout:lookout")["pid"]
        since, count0, cpu0 = time.time(), recorder.count(), _cpu_seconds(lookout_pid)
        time.sleep(20)
        elapsed = time.time() - since
        results["probes_per_second"] = (recorder.count() - count0) / elapsed
        results["cpu_share"] = (_cpu_seconds(lookout_pid) - cpu0) / elapsed
        lateness = recorder.lateness(since)
        results["arrival_lateness_p50"] = _pct(lateness, 50)
        results["arrival_lateness_p95"] = _pct(lateness, 95)
        with sup.db() as c:  # the scheduler's own measure: each run's start against its due time
            meta = dict(c.execute("SELECT key, value FROM meta WHERE key LIKE 'probe_%'").fetchall())
        results["lateness_p50"] = float(meta["probe_lateness_p50"])
        results["lateness_p95"] = float(meta["probe_lateness_p95"])
        results["skipped_share"] = float(meta["probe_skipped"]) / max(1.0, float(meta["probe_runs"]))
        return results
    finally:
        sup.stop()
        recorder.server.shutdown()
