"""Issue 13 (R7, a probe judges within its timeout), against a real supervisord, a real listener
and real endpoints: a trickling endpoint is judged, quick commands never fail, log_pattern sees
the line that rotated the log and the one before a burst, and 100 workers started together
spread their probes over the period. The 60 s and 2 min tests are the point: rare failures."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from .harness import free_port, http_get, lookout_toml, stays, wait_for
from .test_probe_io import TrickleServer
from .test_probes import firing, probe_row, remediations, settings


def test_a_trickling_endpoint_is_alerted_within_8s_of_the_first_probe(supervisor_factory, webhook):
    """One header byte every 0.3 s: each read was quick, so a 1 s probe was never judged."""
    server = TrickleServer(interval=0.3, port=free_port())
    try:
        probe = {"match": "svc", "http": {"url": f"http://127.0.0.1:{server.port}/healthz"}, "timeout": "1s",
                 "period": "2s", "failure_threshold": 2}
        supervisor_factory("[program:svc]\ncommand=sleep 1000\n", settings(webhook, [probe])).start()
        alert = wait_for(lambda: firing(webhook, "svc is unhealthy (http probe)"), 30, "unhealthy alert")[0]
        received = webhook.matching("svc is unhealthy")[0].at
        assert received - server.accepted[0] <= 8, (received - server.accepted[0], server.accepted)
        assert "timed out after 1s reading the response headers" in alert and "2 times in a row" in alert, alert
    finally:
        server.close()


LOGGER = r"""
import os, sys, time
root, maxbytes = sys.argv[1], int(sys.argv[2])
name = os.environ["SUPERVISOR_PROCESS_NAME"]
out = sys.stdout.buffer
if name == "rot":  # up to 100 bytes below stdout_logfile_maxbytes
    out.write(b"".join((b"filler %05d " % i).ljust(99, b".") + b"\n" for i in range((maxbytes - 100) // 100)))
    out.flush()
while not os.path.exists(os.path.join(root, "go." + name)):
    time.sleep(0.05)
if name == "rot":  # this line crosses maxbytes: supervisord writes it, then renames the file to .1
    out.write(b"CRITICAL rot: the line that crossed stdout_logfile_maxbytes ".ljust(199, b"!") + b"\n")
else:  # the line, then 3 MB at once
    out.write(b"CRITICAL burst: the line before 3 MB\n" + (b"b" * 99 + b"\n") * 30000)
out.flush()
time.sleep(100000)
"""


def test_log_pattern_sees_the_line_that_rotated_the_log_and_the_line_before_a_burst(supervisor_factory, webhook,
                                                                                     tmp_path):
    script = tmp_path / "logger.py"
    script.write_text(LOGGER)
    programs = f"""\
[program:rot]
command={sys.executable} {script} %(here)s 20000
stdout_logfile=%(here)s/logs/rot.log
stdout_logfile_maxbytes=20000
stdout_logfile_backups=3

[program:burst]
command={sys.executable} {script} %(here)s 0
stdout_logfile=%(here)s/logs/burst.log
"""
    probes = [{"match": name, "name": f"{name}_pattern", "log_pattern": {"regex": "CRITICAL", "within": "5m"},
               "period": "1s"} for name in ("rot", "burst")]
    sup = supervisor_factory(programs, settings(webhook, probes)).start()
    rot_log = sup.root / "logs" / "rot.log"
    wait_for(lambda: rot_log.exists() and rot_log.stat().st_size == 19900, 20, "the filler logged")
    for name in ("rot", "burst"):  # each probe has had its first look at its log
        wait_for(lambda name=name: probe_row(sup, f"{name}:{name}", f"{name}_pattern").get("healthy") == 1, 20, name)
        (sup.root / f"go.{name}").touch()
    rot = wait_for(lambda: firing(webhook, "rot is unhealthy (rot_pattern probe)"), 20, "the rotating line")[0]
    assert "CRITICAL rot: the line that crossed stdout_logfile_maxbytes" in rot, rot
    rotated = Path(f"{rot_log}.1").read_bytes()  # it really was the line that rotated the log
    assert rotated.rstrip().endswith(b"!!!") and b"CRITICAL rot" in rotated.splitlines()[-1]
    assert b"CRITICAL" not in rot_log.read_bytes()
    burst = wait_for(lambda: firing(webhook, "burst is unhealthy (burst_pattern probe)"), 20, "the line before")[0]
    assert "CRITICAL burst: the line before 3 MB" in burst and "not read" not in burst, burst
    assert (sup.root / "logs" / "burst.log").stat().st_size > 3_000_000


def test_a_log_pattern_count_above_what_is_kept_is_refused(tmp_path):
    config = tmp_path / "lookout.toml"
    config.write_text(lookout_toml({
        "state": {"path": str(tmp_path / "lookout.db")},
        "probes": [{"match": "svc", "log_pattern": {"regex": "ERROR", "count": 15000, "within": "1h"}}]}))
    result = subprocess.run([sys.executable, "-m", "lookout.listener", "-c", str(config), "--check-config"],
                            capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "probes[0].log_pattern.count" in lines[0] and "10000" in lines[0], lines


@pytest.mark.long
def test_exec_probes_of_quick_commands_never_fail_in_a_minute(supervisor_factory, webhook, tmp_path,
                                                             record_property):
    """`cat FILE` and `ls /` came back "exit status -9" in up to half the runs: with
    failure_threshold = 1 and action = "restart" that restarted healthy programs."""
    data = tmp_path / "data.txt"
    data.write_text("price 101.5\n" * 50)
    commands = {"a": ["true"], "b": ["cat", str(data)], "c": ["ls", "/"]}
    programs = "".join(f"[program:{name}]\ncommand=sleep 100000\n\n" for name in commands)
    probes = [{"match": name, "name": f"exec_{name}", "exec": argv, "period": "1s", "failure_threshold": 1,
               "action": "restart"} for name, argv in commands.items()]
    sup = supervisor_factory(programs, settings(webhook, probes)).start()
    for name in commands:
        wait_for(lambda name=name: probe_row(sup, f"{name}:{name}", f"exec_{name}").get("healthy") == 1, 20, name)
    pids = {name: sup.info(f"{name}:{name}")["pid"] for name in commands}
    stays(lambda: not webhook.messages, 60, "no message at the webhook", interval=1.0)
    assert {name: sup.info(f"{name}:{name}")["pid"] for name in commands} == pids
    rows = {name: probe_row(sup, f"{name}:{name}", f"exec_{name}") for name in commands}
    assert all(r["failures_total"] == 0 and r["last_ok"] == 1 for r in rows.values()), rows
    assert all(not remediations(sup, f"{name}:{name}") for name in commands)
    runs = {name: r["consecutive_successes"] for name, r in rows.items()}
    assert all(n >= 50 for n in runs.values()), runs
    record_property("report", f"exec probes for 60 s: runs {runs}, 0 failures, 0 restarts, 0 messages")


def max_gap_ratio(starts: list[float], period: float) -> float:
    """The largest gap between consecutive starts folded into the period, over the mean gap."""
    phases = sorted(t % period for t in starts)
    gaps = [b - a for a, b in zip(phases, phases[1:])] + [period - phases[-1] + phases[0]]
    return max(gaps) / (period / len(gaps))


@pytest.mark.long
def test_a_hundred_workers_started_together_spread_their_probes(supervisor_factory, webhook, tmp_path,
                                                                record_property):
    """100 processes, an http and a tcp probe each every second, against ONE `python -m
    http.server` (accept backlog 5): all at once overflowed its backlog and dropped SYNs are
    retried after 1 s, the probes' timeout ("timed out after 1s connecting"), in most periods.
    What is judged is the schedule (the spread of one period's starts, and failures that stay
    rare): a target starved of CPU by other work on the machine may miss a deadline now and then,
    and an alert for three of those in a row is the truth about it, not lookout's doing."""
    port = free_port()
    www = tmp_path / "www"
    www.mkdir()
    access_log = tmp_path / "http.server.log"
    with open(access_log, "wb") as err:
        server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=www,
                                  stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/") is not None, 15, "http.server")
        programs = "[program:pool]\ncommand=sleep 100000\nprocess_name=%(program_name)s_%(process_num)03d\n" \
                   "numprocs=100\nstartsecs=0\n"
        probes = [{"match": "pool:*", "name": "http", "http": {"url": f"http://127.0.0.1:{port}/"}, "period": "1s"},
                  {"match": "pool:*", "name": "tcp", "tcp": f"127.0.0.1:{port}", "period": "1s"}]
        sup = supervisor_factory(programs, settings(webhook, probes)).start()

        def rows() -> list[dict]:
            with sup.db() as c:
                return [dict(r) for r in c.execute("SELECT * FROM probes WHERE namespec LIKE 'pool:%'")]

        wait_for(lambda: sum(r["healthy"] == 1 for r in rows()) == 200, 60, "all 200 probes passed", interval=0.5)
        served_before = access_log.read_text().count('"GET / HTTP/1.1" 200')
        failures_before = sum(r["failures_total"] for r in rows())
        ratios: list[float] = []  # max gap / mean gap between the starts of one period's runs, once a second

        def quiet() -> bool:
            # Each probe's latest start (from the listener's store), folded into the period: one
            # run of each of the 200, which is where one period's runs start.
            latest = rows()
            assert len(latest) == 200 and all(time.time() - r["last_at"] < 5 for r in latest), "all still run"
            ratios.append(max_gap_ratio([r["last_at"] for r in latest], 1.0))
            return True

        stays(quiet, 120, "all probes running", interval=1.0)
        served = access_log.read_text().count('"GET / HTTP/1.1" 200') - served_before
        failures = sum(r["failures_total"] for r in rows()) - failures_before
        runs = 200 * 120  # one a second each
        ratios.sort()
        median = ratios[len(ratios) // 2]
        alerts = [m.title for m in webhook.messages]
        record_property("report", f"100 workers x (http + tcp) at 1s for 120 s: {len(alerts)} alerts {alerts[:3]}, "
                                  f"{failures} failed runs of about {runs}, {served} GETs served; max gap / mean gap "
                                  f"between the starts of one period's runs, {len(ratios)} periods: median "
                                  f"{median:.2f}, 90th percentile {ratios[len(ratios) * 9 // 10]:.2f}, worst "
                                  f"{ratios[-1]:.2f}")
        # Bunched starts (the bug) leave one gap of nearly the whole period: about 200 mean gaps, in
        # every period. Spread starts leave under 2 (the pure test below); a run started late on a
        # busy machine widens a gap of its period by its lateness: a mean gap is 5 ms, and a machine
        # with one core kept busy made the median period's largest 4 mean gaps (12 at load 27).
        assert median < 20, ratios
        # Bunched starts also overflow the backlog of 5 in most periods: most runs fail. A target or
        # a listener starved of CPU misses a deadline now and then: 1.3 % with one core kept busy.
        assert failures <= runs // 20, (failures, [(m.title, m.body[:400]) for m in webhook.messages[:3]])
        assert served >= 100 * 100, served  # about 100 a second for 120 s
    finally:
        server.terminate()
        server.wait(10)


def test_the_schedule_itself_keeps_every_gap_under_twice_the_mean():
    """What the real-supervisord test above measures with a busy machine's lateness added: the
    offsets handed out keep the largest gap of one period's starts within 2x the mean, for any
    number of probes (three-gap theorem), where random offsets leave about ln(n) x the mean."""
    from types import SimpleNamespace

    from lookout.listener.probes.scheduler import ProbeScheduler
    from lookout.listener.workers.inbox import Inbox

    scheduler = ProbeScheduler(lambda *a: None, Inbox(None, b"p"))  # type: ignore[arg-type]
    specs = [SimpleNamespace(name="http", period=1.0), SimpleNamespace(name="tcp", period=1.0)]
    for n in (2, 3, 10, 100):
        offsets = [scheduler.offset(f"pool{n}:w{i:03d}", spec) for i in range(n) for spec in specs]
        assert max_gap_ratio(offsets, 1.0) < 2.0 + 1e-9, n
    other = SimpleNamespace(name="slow", period=30.0)  # another period has a sequence of its own
    assert scheduler.offset("pool:w000", other) == 0.0
