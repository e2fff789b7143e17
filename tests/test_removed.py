"""Issue 21, case 8: programs and groups removed by `supervisorctl reread` + `update` close their
alerts with one message each, "removed from supervisord's configuration", within seconds (the
PROCESS_GROUP_REMOVED event; the reconcile is the fallback). Against a real supervisord, and the
rules alone for the fallback."""

from __future__ import annotations

import time

from lookout.listener.rules.models import QUORUM, REMOVED_FROM_CONFIG, RESOLVED, ProcessSnapshot

from .conftest import fast_alerts
from .harness import stays, wait_for
from .test_health_rules import engine_for, ev, start

KEEP = """\
[program:keep]
command=sleep 1000
startsecs=1
"""
REMOVED = """\
[program:fat]
command=sh -c 'echo "fat: no config" >&2; exit 1'
startsecs=1
startretries=1

[program:loop]
command=sh -c 'sleep 1.5; echo "loop: no market data" >&2; exit 3'
startsecs=1
autorestart=true
stopwaitsecs=1

[program:pool]
command=sh -c 'if [ -f %(here)s/down.$SUPERVISOR_PROCESS_NAME ]; then exit 1; fi; exec sleep 1000'
process_name=%(program_name)s_%(process_num)d
numprocs=3
startsecs=1
startretries=0
"""
WHY = "removed from supervisord's configuration"


def test_removed_programs_and_a_pool_below_quorum_each_say_so_once(supervisor_factory, webhook):
    settings = fast_alerts(webhook, crash_loop={"restarts": 3, "within": "1m", "action": "alert"})
    settings["alerts"]["groups"] = [{"match": "pool", "min_running": 2, "for": "1s"}]
    sup = supervisor_factory(KEEP + "\n" + REMOVED, settings)
    for i in (1, 2):
        (sup.root / f"down.pool_{i}").touch()  # two of three members give up at once: below quorum
    sup.start()
    webhook.wait("fat gave up starting", timeout=30)
    webhook.wait("loop is crash-looping", timeout=40)
    webhook.wait("pool is below quorum", timeout=30)
    wait_for(lambda: webhook.entries_for("pool:pool_2", "gave up starting"), 20, "pool_2's own alert")
    before = len(webhook.messages)

    sup.conf.write_text(sup.conf.read_text().replace(REMOVED, ""))
    assert sup.ctl("reread").returncode == 0
    updated_at = time.time()
    assert sup.ctl("update").returncode == 0
    names = ["fat", "loop", "pool", "pool:pool_1", "pool:pool_2"]  # every open alert of what was removed
    wait_for(lambda: all(webhook.entries_for(n, WHY) for n in names), 15,
             f"one '{WHY}' for each of {names}")
    said = [m for m in webhook.messages if WHY in m.body]
    assert said and max(m.at for m in said) - updated_at < 10, [m.at - updated_at for m in said]
    stays(lambda: all(len(webhook.entries_for(n, WHY)) == 1 for n in names), 4, "once each")
    later = webhook.messages[before:]
    assert all(m.title.startswith("[RESOLVED]") for m in later), [m.title for m in later]  # nothing fires
    text = "\n".join(m.text for m in later)
    for wrong in ("stopped by an operator", "back to", "running again"):
        assert wrong not in text, text
    assert not webhook.entries_for("pool:pool_0") and not webhook.entries_for("keep")  # nothing to say of them
    with sup.db() as c:
        open_alerts = c.execute("SELECT namespec, family FROM alerts WHERE resolved_at IS NULL").fetchall()
        gone = c.execute("SELECT namespec FROM processes WHERE present = 0 ORDER BY namespec").fetchall()
    assert [tuple(r) for r in open_alerts] == [], [tuple(r) for r in open_alerts]
    assert [r[0] for r in gone] == ["fat:fat", "loop:loop", "pool:pool_0", "pool:pool_1", "pool:pool_2"]


def test_the_reconcile_closes_what_a_missed_event_would_have():
    """Fallback: the event was lost (an overflow, an older snippet without PROCESS_GROUP_REMOVED); the
    reconcile finds the processes gone: one removal each, the group's quorum alert too."""
    e = engine_for(alerts={"groups": [{"match": "pool", "min_running": 2, "for": "1s"}]})
    for i in range(3):
        start(e, 0, name=f"pool_{i}", group="pool")
    for i in (1, 2):
        ev(e, 5, "EXITED", name=f"pool_{i}", group="pool", from_state="RUNNING", expected=False)
        ev(e, 5.1, "FATAL", name=f"pool_{i}", group="pool", from_state="BACKOFF")
    e.on_time(10)
    assert (QUORUM, "pool") in e.alerts
    out = e.on_snapshot([ProcessSnapshot("other", "other", "RUNNING", 1, 0, 20, 7, 0, "")], 20, 20)
    closed = {(out.alerts[n.key].family, n.namespec) for n in out.notices if n.kind == RESOLVED}
    assert closed == {("process", "pool:pool_1"), ("process", "pool:pool_2"), (QUORUM, "pool")}
    assert all(out.alerts[k].resolution == REMOVED_FROM_CONFIG for k in closed) and not e.alerts
    assert len(out.notices) == 3 and not any(r.present for r in e.records.values() if r.group == "pool")


def test_updates_stop_before_the_removal_is_not_an_operators():
    """`update` stops a removed group first: those STOPPED events close the alerts as an operator's stop
    would; the removal that follows gives them its own reason, in the same pending message."""
    from lookout.listener.protocol.events import Delivery, ProcessGroupEvent

    e = engine_for(alerts={"crash_loop": {"restarts": 2, "within": "1m", "action": "alert"}})
    start(e, 0, name="loop")
    for t in (3, 6):
        ev(e, t, "EXITED", name="loop", from_state="RUNNING", expected=False)
        start(e, t + 0.1, name="loop", from_state="EXITED")
    alert = e.alerts[("process", "loop:loop")]
    ev(e, 10, "STOPPING", name="loop", from_state="RUNNING")
    out = ev(e, 10.1, "STOPPED", name="loop", from_state="STOPPING")  # `update`, though nobody can tell yet
    assert [(n.kind, out.alerts[n.key].resolution) for n in out.notices] == [(RESOLVED, "stopped")]
    out = e.on_event(ProcessGroupEvent(Delivery("s", 900, "p", 900, "PROCESS_GROUP_REMOVED"), "REMOVED", "loop"),
                     10.2)
    assert [(n.kind, n.namespec) for n in out.notices] == [(RESOLVED, "loop:loop")]  # the store keeps one pending
    assert alert.resolution == REMOVED_FROM_CONFIG and not e.records["loop:loop"].present


def test_a_quorum_alert_resolved_by_updates_stops_is_removed_instead():
    """`update` stops every member (deliberate, so the pool is no longer short: "back to 1 of 2"); the
    removal right after gives the quorum alert its own reason, in the same pending message."""
    from lookout.listener.protocol.events import Delivery, ProcessGroupEvent

    e = engine_for(alerts={"groups": [{"match": "pool", "min_running": 2, "for": "1s"}]})
    for i in range(2):
        start(e, 0, name=f"pool_{i}", group="pool")
    ev(e, 5, "EXITED", name="pool_1", group="pool", from_state="RUNNING", expected=False)
    ev(e, 5.1, "STARTING", name="pool_1", group="pool", from_state="EXITED")
    ev(e, 5.2, "BACKOFF", name="pool_1", group="pool", from_state="STARTING")
    e.on_time(8)
    alert = e.alerts[(QUORUM, "pool")]
    out = ev(e, 10, "STOPPED", name="pool_1", group="pool", from_state="BACKOFF")  # deliberate: not short now
    assert alert.resolution == "is back to 1 of 2 running (minimum 2)" and alert.key in out.alerts
    ev(e, 10.1, "STOPPING", name="pool_0", group="pool", from_state="RUNNING")
    ev(e, 10.2, "STOPPED", name="pool_0", group="pool", from_state="STOPPING")
    out = e.on_event(ProcessGroupEvent(Delivery("s", 901, "p", 901, "PROCESS_GROUP_REMOVED"), "REMOVED", "pool"),
                     10.3)
    assert alert.resolution == REMOVED_FROM_CONFIG
    assert {n.key for n in out.notices if n.kind == RESOLVED} == {alert.key, ("process", "pool:pool_1")}
    assert e.book.recently_closed[("process", "pool:pool_1")].resolution == REMOVED_FROM_CONFIG  # (its crash)


def test_the_store_keeps_one_pending_resolution_with_the_amended_reason(tmp_path):
    from lookout.listener.protocol.events import Delivery, ProcessGroupEvent
    from lookout.listener.store.schema import connect
    from lookout.listener.store.state import StateStore

    store = StateStore(connect(str(tmp_path / "lookout.db")))
    e = engine_for()
    start(e, 0, name="web")
    for out in (ev(e, 2, "EXITED", name="web", from_state="RUNNING", expected=False),
                ev(e, 2.1, "STARTING", name="web", from_state="EXITED")):  # "web crashed"
        store.commit(out, stopping=False)
    store.conn.execute("UPDATE notifications SET dispatched_at = 6")  # its firing went out
    store.commit(ev(e, 10, "STOPPED", name="web", from_state="STARTING"), stopping=False)  # (update's stop)
    removed = ProcessGroupEvent(Delivery("s", 902, "p", 902, "PROCESS_GROUP_REMOVED"), "REMOVED", "web")
    store.commit(e.on_event(removed, 10.1), stopping=False)
    rows = store.conn.execute("SELECT n.kind, a.resolution FROM notifications n JOIN alerts a ON a.id = n.alert_id "
                              "WHERE n.dispatched_at IS NULL").fetchall()
    assert [tuple(r) for r in rows] == [(RESOLVED, REMOVED_FROM_CONFIG)]


def test_process_group_events_are_decoded():
    import pytest

    from lookout.listener.protocol.events import MalformedEvent, ProcessGroupEvent, decode
    from lookout.listener.protocol.parser import Envelope

    def envelope(name: str, payload: str) -> Envelope:
        return Envelope({"ver": "3.0", "server": "s", "serial": "7", "pool": "lookout", "poolserial": "3",
                         "eventname": name, "len": str(len(payload))}, payload)

    event = decode(envelope("PROCESS_GROUP_REMOVED", "groupname:pool\n"))  # supervisord's: with its newline
    assert isinstance(event, ProcessGroupEvent) and (event.change, event.group) == ("REMOVED", "pool")
    assert decode(envelope("PROCESS_GROUP_ADDED", "groupname:web\n")).change == "ADDED"
    with pytest.raises(MalformedEvent):
        decode(envelope("PROCESS_GROUP_REMOVED", "\n"))


def test_a_stop_by_update_is_never_sent_as_an_operators(tmp_path):
    """The notifier holds a "stopped by an operator" resolution for a moment (STOP_SETTLE): when the
    removal follows (supervisorctl update: stopProcessGroup, then removeProcessGroup), only the removal
    is said, even when another alert's group_wait ends between the stop and the removal."""
    from lookout.config.load import parse_config
    from lookout.listener.notifier.settle import STOP_SETTLE
    from lookout.listener.notifier.worker import Notifier
    from lookout.listener.protocol.events import Delivery, ProcessGroupEvent
    from lookout.listener.store.schema import connect
    from lookout.listener.store.state import StateStore

    from .test_delivery_order import FlakyTarget

    config = parse_config({"state": {"path": str(tmp_path / "db")},
                           "alerts": {"group_wait": "1s", "group_interval": "0s"}})
    hook, clock = FlakyTarget("hook"), [100.0]
    notifier = Notifier(config, [hook], None, clock=lambda: clock[0])  # type: ignore[arg-type]
    store, e = StateStore(connect(config.state_path)), engine_for()

    def at(t: float, out) -> None:  # noqa: ANN001
        clock[0] = t
        store.commit(out, stopping=False)
        notifier.step(t)

    for name in ("web", "api"):
        start(e, 90, name=name)
        at(95, ev(e, 95, "EXITED", name=name, from_state="RUNNING", expected=False))
        at(95, ev(e, 95.1, "STARTING", name=name, from_state="EXITED"))  # "crashed"
    at(97, e.on_time(97))
    at(98, e.on_time(98))
    crashes = len(hook.sent)
    assert crashes and all("crashed" in title for title in hook.sent)
    at(100, ev(e, 100, "STOPPED", name="api", from_state="STOPPING"))  # an operator's stop: for a moment, unsure
    at(100.5, ev(e, 100.5, "STOPPED", name="web", from_state="STOPPING"))  # update's stop of web ...
    at(101.2, e.on_time(101.2))  # ... the first one's group_wait ends before the removal: held, both
    assert len(hook.sent) == crashes
    removed = ProcessGroupEvent(Delivery("s", 903, "p", 903, "PROCESS_GROUP_REMOVED"), "REMOVED", "web")
    at(101.3, e.on_event(removed, 101.3))
    for t in (102, 103, 100.5 + STOP_SETTLE + 0.1, 105, 106):
        at(t, e.on_time(t))
    assert hook.sent[crashes:] == ["[RESOLVED] web removed from supervisord's configuration on " + config.hostname,
                                   "[RESOLVED] api was stopped by an operator on " + config.hostname], hook.sent
