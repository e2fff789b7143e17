"""Messages to one target go out in the order they were written: a "RESOLVED" never overtakes
the alert it resolves when a failing target comes back; a message the target keeps rejecting
holds the later ones back for STUCK_AFTER attempts only."""

from __future__ import annotations

from lookout.listener.config.load import parse_config
from lookout.listener.notifier.ordering import STUCK_AFTER, delivery_queues
from lookout.listener.notifier.worker import Notifier
from lookout.listener.store.delivery import DeliveryStore, OutboxMessage
from lookout.listener.store.schema import connect


class FlakyTarget:
    format, tags = "text", frozenset()

    def __init__(self, key: str) -> None:
        self.key, self.label, self.scheme = key, f"test://{key}", "test"
        self.down = False
        self.refuses: set[str] = set()  # titles it rejects for their content
        self.sent: list[str] = []

    def wants(self, tags: object) -> bool:
        return True

    def send(self, title: str, body: str, notify_type: str) -> None:
        if self.down or title in self.refuses:
            raise ValueError("refused")
        self.sent.append(title)


def make(tmp_path, *targets: FlakyTarget):  # noqa: ANN201
    config = parse_config({"state": {"path": str(tmp_path / "db")},
                           "notify": {"retry_initial": "10s", "retry_max": "10s"}})
    clock = [100.0]
    notifier = Notifier(config, list(targets), None, clock=lambda: clock[0])  # type: ignore[arg-type]
    store = DeliveryStore(connect(config.state_path))

    def write(target: FlakyTarget, title: str) -> None:
        store.dispatch([], [{"target_key": target.key, "target_label": target.label, "scheme": "test",
                             "title": title, "body": title, "notify_type": "info"}], clock[0])

    def run(until: float) -> None:
        while clock[0] < until:
            notifier.step(clock[0])
            clock[0] += 0.5

    return write, run


def test_a_resolved_message_waits_for_its_alert(tmp_path):
    slack, mail = FlakyTarget("slack"), FlakyTarget("mail")
    write, run = make(tmp_path, slack, mail)
    slack.down = True
    write(slack, "[WARNING] feed crashed")
    write(mail, "[WARNING] feed crashed")
    run(101)  # slack fails: its retry is due at 110
    slack.down = False
    write(slack, "[RESOLVED] feed is running again")
    write(mail, "[RESOLVED] feed is running again")
    run(105)
    assert slack.sent == [] and len(mail.sent) == 2  # the other target does not wait
    run(112)
    assert slack.sent == ["[WARNING] feed crashed", "[RESOLVED] feed is running again"]


def test_a_message_the_target_keeps_refusing_holds_the_rest_back_only_so_long(tmp_path):
    slack = FlakyTarget("slack")
    write, run = make(tmp_path, slack)
    slack.refuses = {"[WARNING] too big"}
    write(slack, "[WARNING] too big")
    write(slack, "[WARNING] next")
    run(100 + 10 * (STUCK_AFTER - 1) - 1)
    assert slack.sent == []
    run(100 + 10 * STUCK_AFTER + 2)
    assert slack.sent == ["[WARNING] next"]


def test_queues_are_per_target_and_stop_at_a_message_waiting_for_its_retry():
    def msg(i: int, key: str, due: float, attempts: int = 0) -> OutboxMessage:
        return OutboxMessage(i, key, key, "t", f"m{i}", "", "", 0.0, attempts, due)

    queues, wake = delivery_queues([msg(1, "a", 50), msg(2, "a", 0), msg(3, "b", 0), msg(4, "b", 0)], 10)
    assert [[m.id for m in q] for q in queues] == [[3, 4]] and wake == 50
    queues, wake = delivery_queues([msg(1, "a", 50, attempts=STUCK_AFTER), msg(2, "a", 0)], 10)
    assert [[m.id for m in q] for q in queues] == [[1, 2]]  # the stuck one is tried first, ahead of its time
    queues, wake = delivery_queues([msg(1, "a", 50, attempts=STUCK_AFTER), msg(2, "a", 40)], 10)
    assert queues == [] and wake == 40
    queues, wake = delivery_queues([msg(1, "a", 50, attempts=STUCK_AFTER), msg(2, "a", 40), msg(3, "a", 0)], 10)
    assert queues == [] and wake == 40  # 3 waits behind 2, which is not stuck


def test_after_an_outage_longer_than_the_stuck_limit_the_oldest_goes_first(tmp_path):
    slack = FlakyTarget("slack")
    write, run = make(tmp_path, slack)
    slack.down = True
    write(slack, "[WARNING] feed crashed")
    run(100 + 10 * STUCK_AFTER + 5)  # the crash message is stuck now, its next retry due at 140
    write(slack, "[RESOLVED] feed is running again")
    run(100 + 10 * STUCK_AFTER + 12)  # the resolved one fails too (next due at 145, before the crash's)
    slack.down = False
    run(100 + 10 * STUCK_AFTER + 60)
    assert slack.sent == ["[WARNING] feed crashed", "[RESOLVED] feed is running again"]


def test_failing_since_ends_when_the_failing_message_is_given_up_and_counts_every_target(tmp_path):
    slack, mail = FlakyTarget("slack"), FlakyTarget("mail")
    config = parse_config({"state": {"path": str(tmp_path / "db")},
                           "notify": {"retry_initial": "10s", "retry_max": "10s", "retry_for": "1m"}})
    clock = [100.0]
    notifier = Notifier(config, [slack, mail], None, clock=lambda: clock[0])  # type: ignore[arg-type]
    store = DeliveryStore(connect(config.state_path))
    slack.down = True
    for target in (slack, mail):
        store.dispatch([], [{"target_key": target.key, "target_label": target.label, "scheme": "test",
                             "title": "t", "body": "b", "notify_type": "info"}], clock[0])
    notifier.step(clock[0])
    assert notifier.failing_since == 100.0 and mail.sent == ["t"]  # the working target does not hide the dead one
    store.dispatch([], [{"target_key": "mail", "target_label": "m", "scheme": "test", "title": "t2", "body": "b",
                         "notify_type": "info"}], 105.0)
    clock[0] = 105.0
    notifier.step(clock[0])
    assert notifier.failing_since == 100.0  # a later success elsewhere does not end it
    while clock[0] < 170:
        clock[0] += 5
        notifier.step(clock[0])
    assert notifier.failing_since is None  # still down, but the message was given up on (retry_for): it ends
