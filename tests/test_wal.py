"""Issue 23, point 7: the store's WAL stays bounded while the listener writes (a storm of commits
with a reader beside it) and is 0 bytes after a clean shutdown."""

from __future__ import annotations

import os

from lookout.listener.rules.engine import AlertEngine
from lookout.listener.store.reads import StoreReader
from lookout.listener.store.schema import connect
from lookout.listener.store.state import StateStore

from .conftest import fast_alerts
from .harness import wait_for
from .test_rules import SETTINGS, crash, start

WAL_BOUND = 4 * 1024 * 1024


def wal_size(path: str) -> int:
    try:
        return os.path.getsize(f"{path}-wal")
    except FileNotFoundError:
        return 0


def test_the_wal_stays_under_4mb_through_a_storm_of_commits_with_readers_beside_it(tmp_path):
    path = str(tmp_path / "lookout.db")
    store, engine = StateStore(connect(path)), AlertEngine(SETTINGS)
    names = [f"w{i:03d}" for i in range(50)]
    biggest, t = 0, 0.0
    for name in names:
        for at, event in start(name, t):
            store.commit(engine.on_event(event, at), stopping=False)
    for _ in range(40):  # 50 programs crash 40 times each: 6000 state changes, one commit each
        for name in names:
            t += 0.05
            for at, event in crash(t, name):
                store.commit(engine.on_event(event, at), stopping=False)
        with StoreReader.open(path) as reader:  # as the exporter's scrape and `lookout status` read
            reader.present_processes()
            reader.open_alerts()
        biggest = max(biggest, wal_size(path))
    assert 0 < biggest < WAL_BOUND, biggest
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # (what a clean shutdown does)
    assert wal_size(path) == 0


def test_a_clean_shutdown_leaves_a_wal_of_0_bytes(supervisor_factory, webhook):
    sup = supervisor_factory("[program:svc]\ncommand=sleep 1000\n", fast_alerts(webhook)).start()
    sup.wait_state("svc:svc", "RUNNING", 30)
    assert sup.ctl("restart", "svc").returncode == 0
    wait_for(lambda: (sup.process_row("svc:svc") or {}).get("state") == "RUNNING"
             and wal_size(str(sup.state_path)) > 0, 30, "events written")
    assert sup.ctl("stop", "lookout").returncode == 0
    wait_for(lambda: wal_size(str(sup.state_path)) == 0, 30, "the WAL truncated by the listener's clean stop")
