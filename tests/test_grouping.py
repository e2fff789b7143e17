"""Issue 23, point 2: the first page of a new episode after group_wait (1 s as shipped), what follows
within group_interval (10 s as shipped) as one update at its end, as Alertmanager's group_wait and
group_interval do. The schedule is judged on the notifier's own clock: no timing involved."""

from __future__ import annotations

from lookout.config.load import parse_config
from lookout.listener.notifier.worker import Notifier
from lookout.listener.store.schema import connect
from lookout.listener.store.state import StateStore

from .test_delivery_order import FlakyTarget
from .test_health_rules import engine_for, ev, start


def crash(e, t: float, name: str):  # noqa: ANN001, ANN201
    """An unexpected exit at t - 0.01 and its respawn at t: "crashed" at t."""
    t -= 0.01
    out = ev(e, t, "EXITED", name=name, from_state="RUNNING", expected=False)
    out.merge(ev(e, t + 0.01, "STARTING", name=name, from_state="EXITED"))
    return out


def test_shipped_defaults_first_page_after_1s_then_one_update_per_group_interval(tmp_path):
    config = parse_config({"state": {"path": str(tmp_path / "db")}})
    assert (config.alerts.group_wait, config.alerts.group_interval) == (1.0, 10.0)  # as shipped
    hook, clock = FlakyTarget("hook"), [100.0]
    notifier = Notifier(config, [hook], None, clock=lambda: clock[0])  # type: ignore[arg-type]
    store, e = StateStore(connect(config.state_path)), engine_for()
    sent_at: list[tuple[float, str]] = []  # the messages written, when (the send follows at once, on its thread)

    def at(t: float, out=None) -> None:  # noqa: ANN001
        clock[0] = t
        if out is not None:
            store.commit(out, stopping=False)
        notifier.step(t)
        sent_at[:] = [(r[0], r[1]) for r in store.conn.execute("SELECT created_at, title FROM outbox ORDER BY id")]

    names = [f"w{i}" for i in range(6)]
    for name in names:
        start(e, 90, name=name)
    at(100, crash(e, 100, "w0"))  # a quiet host: the first crash
    at(100.5, crash(e, 100.5, "w1"))  # the same burst
    at(100.9)
    assert sent_at == []
    at(101.0)
    assert [t for t, _ in sent_at] == [101.0] and "w0" in sent_at[0][1] and "w1" in sent_at[0][1]
    for i, t in enumerate((102, 104, 108), start=2):  # the storm goes on: they wait for the interval's end
        at(t, crash(e, t, names[i]))
        at(t + 1.5)
    assert len(sent_at) == 1
    at(110.9)
    assert len(sent_at) == 1
    at(111.0)
    assert [t for t, _ in sent_at] == [101.0, 111.0]
    assert all(n in sent_at[1][1] for n in ("w2", "w3", "w4")), sent_at
    at(140, crash(e, 140, "w5"))  # quiet for longer than the interval: a new first page, after group_wait
    at(140.9)
    assert len(sent_at) == 2
    at(141.0)
    assert [t for t, _ in sent_at] == [101.0, 111.0, 141.0] and "w5" in sent_at[2][1]
