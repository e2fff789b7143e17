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
    rows = [(now - 2 * 86400, "web:web", "state", "STARTING (from EXITED, pid 1)"),
            (now - 2 * 86400, "web:web", "action", "restarted by lookout: unhealthy"),
            (now - 7200, "web:web", "state", "STARTING (from BACKOFF)"),
            (now - 60, "web:web", "action", "restarted by lookout: unhealthy")]
    conn.executemany("INSERT INTO history(at, namespec, kind, detail) VALUES (?, ?, ?, ?)", rows)
    conn.commit()
    counts = StoreReader.open(path).restart_counts(now)["web:web"]
    assert (counts.last_hour, counts.last_day) == (1, 2), counts
