"""The store's read side: what `lookout status` and the exporter count comes from the window asked."""

from __future__ import annotations

from lookout.listener.store.reads import StoreReader
from lookout.listener.store.schema import connect


def test_restart_counts_keep_to_their_window(tmp_path):
    """A supervisord restart 2 days old counted in 'restarts 24h' (an OR bound tighter than the
    window's AND): only the last hour and the last day count."""
    path = str(tmp_path / "lookout.db")
    conn = connect(path)
    now = 1_000_000.0
    rows = [(now - 2 * 86400, "web:web", "state", "STARTING (from EXITED, pid 1)", "supervisord"),
            (now - 2 * 86400, "web:web", "action", "restarted by lookout: unhealthy", "lookout"),
            (now - 7200, "web:web", "state", "STARTING (from BACKOFF)", "supervisord"),
            (now - 60, "web:web", "action", "restarted by lookout: unhealthy", "lookout")]
    conn.executemany("INSERT INTO history(at, namespec, kind, detail, restart) VALUES (?, ?, ?, ?, ?)", rows)
    conn.commit()
    counts = StoreReader.open(path).restart_counts(now)["web:web"]
    assert (counts.last_hour, counts.last_day) == (1, 2), counts


def test_a_schema_5_history_gets_its_facts_from_its_wording_once(tmp_path):
    """Before schema 6 a restart and an exit's status were only in the wording of a history row;
    the listener that migrates the store reads them into the new columns once, so `lookout status`
    counts the same restarts and shows the same last exit across the upgrade."""
    import sqlite3

    path = str(tmp_path / "lookout.db")
    with sqlite3.connect(path) as old:  # the history table as schema 5 had it
        old.execute("CREATE TABLE history (id INTEGER PRIMARY KEY, at REAL NOT NULL, namespec TEXT NOT NULL, "
                    "kind TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '')")
        old.executemany("INSERT INTO history(at, namespec, kind, detail) VALUES (?, ?, ?, ?)", [
            (100.0, "web:web", "state", "STARTING (from EXITED, pid 1)"),
            (110.0, "web:web", "state", "STARTING (from STOPPED)"),
            (120.0, "web:web", "action", "restarted by lookout, 1st of 3 allowed in 1h"),
            (130.0, "web:web", "exit", "exit status 3 after running 1.2s"),
            (140.0, "feed:feed", "exit", "killed by SIGKILL after running 4s"),
            (150.0, "calm:calm", "exit", "exit status not known: it ran again before lookout asked")])
    old.close()
    connect(path).close()  # the listener's open: migrated in place
    reader = StoreReader.open(path)
    counts = reader.restart_counts(200.0)["web:web"]
    assert (counts.last_hour, counts.last_day) == (2, 2), counts
    exits = reader.history_exits()
    assert (exits["web:web"].text, exits["web:web"].status) == ("exit status 3", 3)
    assert (exits["feed:feed"].text, exits["feed:feed"].status) == ("killed by SIGKILL", -1)
    assert exits["calm:calm"].status is None and exits["calm:calm"].text.startswith("exit status not known")
