"""Reading exit statuses from supervisord's main log (events do not carry them)."""

from __future__ import annotations

from lookout.listener.workers.log_reader import ExitInfo, last_exits

LOG = """\
2026-11-26 09:10:11,100 WARN exited: feed (exit status 3; not expected)
2026-11-26 09:10:12,100 INFO spawned: 'feed' with pid 4242
2026-11-26 09:10:13,100 INFO success: feed entered RUNNING state, process has stayed up for > than 1 seconds (startsecs)
2026-11-26 09:10:13,100 WARN exited: worker_1 (terminated by SIGKILL; not expected)
2026-11-26 09:10:14,100 WARN exited: core (terminated by SIGSEGV (core dumped); not expected)
2026-11-26 09:10:15,100 INFO exited: oneshot (exit status 0; expected)
2026-11-26 09:10:16,100 WARN stopped: web (terminated by SIGTERM)
2026-11-26 09:10:17,100 WARN exited: feed (exit status 4; not expected)
"""


def test_last_exit_of_each_process():
    found = last_exits(LOG)
    assert found["feed"] == ExitInfo(4, "exit status 4", 5.0)  # the last one wins, ran from its spawn line
    assert found["worker_1"] == ExitInfo(-1, "killed by SIGKILL")  # its spawn is not in the log: unknown
    assert found["core"] == ExitInfo(-1, "killed by SIGSEGV (core dumped)")
    assert found["oneshot"] == ExitInfo(0, "exit status 0")
    assert "web" not in found  # a stop is not an exit: it may be lookout's own brake stop


def test_only_the_names_asked_for():
    assert set(last_exits(LOG, {"feed", "nobody"})) == {"feed"}


def test_run_time_across_midnight_and_a_name_with_a_tab():
    log = ("2026-12-31 23:59:59,500 INFO spawned: 'odd\tname' with pid 7\n"
           "2027-01-01 00:00:01,250 WARN exited: odd\tname (exit status 2; not expected)\n")
    assert last_exits(log)["odd\u2409name"] == ExitInfo(2, "exit status 2", 1.75)  # named as the records name it
