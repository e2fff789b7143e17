"""Issue 21: "maybe delivered" means at most 3 copies of one message in all, whatever happens to
the listener between them. A send out when its listener stops (a restart, kill -9) may have
reached the target: the next listener counts it as a copy, and one whose count is already 3 is
given up on, never sent a 4th time.

The sender's decision first (over scripted lanes, as in test_delivery_isolation.py), then
against a real supervisord whose listener is restarted and killed while a slow target holds
each copy."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

import pytest

from lookout.listener.notifier.lanes import Verdict
from lookout.listener.notifier.sender import MAX_COPIES, OutboxSender

from .conftest import fast_alerts
from .harness import Webhook, stays, wait_for
from .test_delivery_isolation import FEED, ScriptedLanes, crash, history, lookout, outbox


def test_a_message_whose_third_copy_was_out_when_its_listener_stopped_is_not_sent_again(tmp_path):
    config, store, sender, lanes, write, run, clock = outbox(tmp_path, hook=[Verdict.MAYBE] * 2)
    write("hook", "[WARNING] feed crashed")
    run(106)  # two copies out, not answered in time: the third is due
    assert [v for _, _, v in lanes.sent] == [Verdict.MAYBE] * 2
    store.conn.execute("UPDATE outbox SET sending_since = ?", (clock[0],))  # the third out; its listener stops
    again_lanes = ScriptedLanes(hook=[])
    again = OutboxSender(config.notify, sender.by_key, lambda: clock[0], threading.Event(), again_lanes)  # type: ignore[arg-type]
    for _ in range(20):
        again.send_due(store)
        clock[0] += 1.0
    assert again_lanes.sent == [], "a 4th copy"
    row = store.conn.execute("SELECT status, copies, sending_since FROM outbox").fetchone()
    assert tuple(row) == ("maybe", MAX_COPIES, None)
    assert history(store)[-1] == ("maybe delivered to json://hook.example.com: 3 copies sent, none answered in time "
                                  "(the last was out when a listener stopped); not sent again")


@pytest.mark.long
def test_listener_restarts_and_kill9s_between_copies_never_make_a_fourth(supervisor_factory, webhook):
    """The slow target takes each copy in full and answers after 15 s; the listener is stopped
    (restart, kill -9, restart) while it waits for each answer."""
    slow = Webhook(delay=15).start()
    settings = fast_alerts(webhook)
    settings["notify"]["urls"] = [slow.url(), webhook.url()]
    settings["notify"]["timeout"] = "10s"
    sup = supervisor_factory(FEED, settings).start()
    crashed = "crashed and was restarted"
    try:
        crash(sup)
        webhook.wait("feed", crashed)
        for copy, how in enumerate(("restart", "kill -9", "restart"), start=1):
            wait_for(lambda n=copy: len(slow.matching(crashed)) >= n, 40, f"copy {copy} at the slow target")
            pid = sup.listener_pid()
            if how == "restart":
                sup.ctl("restart", "lookout")
            else:
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda pid=pid: sup.listener_running_anew(pid), 30, f"a new listener after the {how}")
        wait_for(lambda: "not sent again" in lookout(sup, "history", "feed").stdout, 30,
                 "the crash given up on as maybe delivered")
        stays(lambda: len(slow.matching(crashed)) == 3, 12, "three copies, no fourth")
        with sup.db() as c:
            row = c.execute("SELECT status, copies FROM outbox WHERE target_label LIKE ? AND body LIKE ?",
                            (f"%:{slow.port}%", f"%{crashed}%")).fetchone()
        assert tuple(row) == ("maybe", 3)
        assert max(Counter(m.title for m in slow.messages).values()) <= 3
    finally:
        slow.stop()
