"""Issue 22, acceptance: a store written by the code before the schema's restructuring (the fixture
tests/fixtures/store-pre22.db, made by tests/fixtures/make_pre22_store.py at the commit its
docstring names), opened by today's listener under a real supervisord with the same programs and a
live webhook: the open crash-loop alert stays open, the messages pending in its outbox are sent
once each, the silence and the hold are still there, and lookout's restart cut short by kill -9 is
finished or reported.

Only the lookout commands and the webhook are asserted on, never the store's tables: the schema is
what changes under this test."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time

import pytest

from .fixtures.make_pre22_store import FIXTURE, PROGRAMS, WEBHOOK_PORT, settings
from .harness import Webhook, stays, wait_for

# The messages the fixture's outbox holds, pending (their target refused connections): rendered
# then, so their text is the old code's, "on vm" included.
PENDING = ("[WARNING] feed crashed and was restarted on", "[CRITICAL] feed is crash-looping on",
           # and one notification not yet grouped into the outbox when the listener was killed
           "[WARNING] stubborn is unhealthy (alive probe) on")
YEAR = 365 * 86400


def keep_the_silence_running(store) -> None:  # noqa: ANN001
    """The fixture's `lookout silence calm --for 365d` (the maximum) ran out a year after it was made:
    its end moves on by whole years, in the fixture's own (pre-22, frozen) schema, as a later
    `lookout silence` would have set it, so that the test does not start failing on that day."""
    with sqlite3.connect(store) as c:
        c.execute("UPDATE silences SET ends_at = ends_at + ? * (1 + CAST((? - ends_at) / ? AS INTEGER)) "
                  "WHERE ends_at < ? + 30 * 86400", (YEAR, time.time(), YEAR, time.time()))
    c.close()


def fixed_port_webhook() -> Webhook:
    """The webhook on the fixture's port: its outbox names the target by a hash of its URL. Another
    run of this test may hold the port for a while: wait for it, with a deadline."""
    def bind() -> Webhook | None:
        try:
            return Webhook(port=WEBHOOK_PORT).start()
        except OSError:
            return None

    return wait_for(bind, 120, f"port {WEBHOOK_PORT} free for the fixture's webhook", interval=1)


def titled(hook: Webhook, start: str) -> list:
    with hook.lock:
        return [m for m in hook.messages if m.title.startswith(start)]


def history_since(sup, name: str, since: float) -> list[dict]:
    out = sup.lookout("history", name, "--since", "3650d", "--json")
    assert out.returncode in (0, 1), out.stdout + out.stderr
    return [row for row in json.loads(out.stdout or "[]") if row["at"] >= since]


def test_a_pre22_store_is_kept_and_finished_by_todays_listener(supervisor_factory, tmp_path):
    store = tmp_path / "lookout.db"
    shutil.copyfile(FIXTURE, store)
    os.chmod(store, 0o600)  # as the listener keeps it
    keep_the_silence_running(store)
    hook = fixed_port_webhook()
    try:
        began = time.time()
        # The same programs and lookout.toml; stubborn's probe passes here (no fail.stubborn in tmp_path).
        sup = supervisor_factory(PROGRAMS, settings(tmp_path), state_path=store).start()

        # What the fixture's outbox and notifications held reaches the webhook, each exactly once.
        for start in PENDING:
            wait_for(lambda s=start: titled(hook, s), 60, f"the fixture's pending message {start!r}")
        stays(lambda: all(len(titled(hook, s)) == 1 for s in PENDING), 5, "each pending message sent once")

        # The crash-loop alert is the fixture's, still open (feed goes on crashing): not a new one.
        alerts = json.loads(sup.lookout("alerts", "--json").stdout)
        loops = [a for a in alerts if a["namespec"] == "feed:feed" and a["kind"] == "crash_loop"]
        assert len(loops) == 1 and loops[0]["severity"] == "critical" and loops[0]["since"] < began, alerts
        status = sup.lookout("status").stdout
        assert any(line.startswith("feed ") and "ALERT critical crash_loop" in line for line in status.splitlines()), \
            status

        # The silence and the hold.
        silences = sup.lookout("silences").stdout
        assert any("calm" in line and "pre22-fixture" in line for line in silences.splitlines()), \
            "the fixture's silence of calm is gone\n" + silences
        assert any(line.startswith("calm ") and "silenced" in line for line in status.splitlines()), status
        idle = sup.lookout("status", "idle").stdout
        assert "held" in idle and "lookout release idle" in idle, idle
        assert not [row for row in history_since(sup, "idle", began) if "released" in row["detail"]]

        # lookout's restart of stubborn, cut short by kill -9 in its stop: finished, or said to be.
        def settled() -> bool:
            acted = [row for row in history_since(sup, "stubborn", began) if row["kind"] == "action"]
            said = [m for m in hook.messages if "CRITICAL" in m.title and "stubborn is stopped" in m.title]
            return bool(acted) and (sup.state_of("stubborn:stubborn") == "RUNNING" or bool(said))

        wait_for(settled, 30, "lookout's restart of stubborn finished or reported")
        assert not hook.matching("restarted by lookout")
        stays(lambda: len(titled(hook, PENDING[1])) == 1, 3, "no second crash-loop message")
        assert [a["kind"] for a in json.loads(sup.lookout("alerts", "--json").stdout)
                if a["namespec"] == "feed:feed"] == ["crash_loop"]
    finally:
        hook.stop()


def test_a_pre22_action_in_flight_and_own_events_due_load_as_typed_state(tmp_path):
    """Before schema 6, the events of lookout's own calls still due were one text
    ("STOPPED <pid> <since>;STARTING 0 <since>;STOPPED ?") and the events seen while a step was in
    flight another ("S<pid> R"); today's store reads both into the same typed state it writes."""
    from lookout.listener.rules.models import DueEvent, ProcessRecord, SeenEvent
    from lookout.listener.store.schema import connect
    from lookout.listener.store.state import StateStore

    conn = connect(str(tmp_path / "db"))
    StateStore(conn).commit(_outcome_with(ProcessRecord("g", "a", state="STOPPED")), stopping=False)
    action = {"id": "1-1", "kind": "restart", "source": "probe:alive", "reason": "r", "pid": 41, "step": "stop",
              "since": 1700000000.25, "seen": "S41 R S0"}
    conn.execute("UPDATE processes SET own_event_due = ?, action = ? WHERE namespec = 'g:a'",
                 ("STOPPED 41 1700000000.25;STARTING 0 1700000001.5;STOPPED ?", json.dumps(action)))
    rec, = StateStore(conn).load_records()
    assert rec.own_event_due == [DueEvent("STOPPED", 41, 1700000000.25), DueEvent("STARTING", 0, 1700000001.5),
                                 DueEvent("STOPPED", stale=True)]
    assert rec.action is not None
    assert rec.action.seen == [SeenEvent("STOPPED", 41), SeenEvent("STARTING"), SeenEvent("STOPPED", 0)]
    StateStore(conn).commit(_outcome_with(rec), stopping=False)
    again, = StateStore(conn).load_records()
    assert again.own_event_due == rec.own_event_due and again.action == rec.action


def _outcome_with(rec):  # noqa: ANN001, ANN202
    from lookout.listener.rules.models import Outcome

    out = Outcome()
    out.records[rec.namespec] = rec
    return out


def schema5_outbox(path: str, abouts: list[str]) -> None:
    """A store with the outbox as schema 5 had it: one pending message per `about` text."""
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, target_key TEXT NOT NULL, "
                    "target_label TEXT NOT NULL, scheme TEXT NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL, "
                    "notify_type TEXT NOT NULL, created_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
                    "next_attempt_at REAL NOT NULL, status TEXT NOT NULL DEFAULT 'pending', "
                    "last_error TEXT NOT NULL DEFAULT '', sent_at REAL, about TEXT NOT NULL DEFAULT '', "
                    "copies INTEGER NOT NULL DEFAULT 0, sending_since REAL)")
        old.executemany("INSERT INTO outbox(target_key, target_label, scheme, title, body, notify_type, created_at, "
                        "next_attempt_at, about) VALUES ('t', 't', 'json', ?, '', 'info', 1.0, 1.0, ?)",
                        [(f"m{i}", about) for i, about in enumerate(abouts)])
    old.close()


def test_a_schema_5_outbox_says_what_each_message_is_about_in_columns(tmp_path):
    """Before schema 6 an outbox row said what it was about in one text; the listener that migrates
    the store reads it into columns once, so the messages keep their order and their re-posts."""
    from lookout.listener.store.delivery import About, DeliveryStore
    from lookout.listener.store.schema import connect

    path = str(tmp_path / "lookout.db")
    schema5_outbox(path, ["a1 a2", "system", "repost a3", "", "* a4"])
    messages = DeliveryStore(connect(path)).pending_messages()
    assert [m.about for m in messages] == [About((1, 2)), About(system=True), About((3,), repost=True),
                                           About(everything=True), About((4,), everything=True)]


def test_the_migration_is_one_transaction_and_says_its_version(tmp_path, monkeypatch):
    """A migration cut short (a kill, a full disk) leaves the older store as it was, and the next
    open migrates it whole: no half-migrated store whose old rows read as about nothing. Every
    store, new or migrated, says its schema version."""
    from lookout.listener.store import schema
    from lookout.listener.store.delivery import About, DeliveryStore

    fresh = schema.connect(str(tmp_path / "fresh.db"))
    assert schema.get_meta(fresh, "schema_version") == str(schema.SCHEMA_VERSION)
    path = str(tmp_path / "lookout.db")
    schema5_outbox(path, ["a1"])
    real = schema._outbox_about_from_text

    def cut_short(conn):  # noqa: ANN001, ANN202
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(schema, "_outbox_about_from_text", cut_short)
    with pytest.raises(Exception, match="disk"):  # (the store's own error, naming the cause)
        schema.connect(path)
    with sqlite3.connect(path) as c:
        assert "alert_ids" not in {row[1] for row in c.execute("PRAGMA table_info(outbox)")}
    c.close()
    monkeypatch.setattr(schema, "_outbox_about_from_text", real)
    conn = schema.connect(path)
    assert [m.about for m in DeliveryStore(conn).pending_messages()] == [About((1,))]
    assert schema.get_meta(conn, "schema_version") == str(schema.SCHEMA_VERSION)
