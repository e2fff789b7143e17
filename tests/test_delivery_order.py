"""Messages to one target go out in the order they were written, for each thing they are about:
a "RESOLVED" never overtakes the alert it resolves, whatever made the alert's message fail (an
outage of any length, one 503 as the target comes back, a content the target refuses); messages
about other alerts, and other targets, go on meanwhile."""

from __future__ import annotations

import random

import pytest

from lookout.config.load import parse_config
from lookout.listener.notifier.ordering import delivery_queues
from lookout.listener.notifier.text_target import TextTarget
from lookout.listener.notifier.worker import Notifier
from lookout.listener.store.delivery import DeliveryStore, OutboxMessage
from lookout.listener.store.schema import connect

from .harness import about as as_about


class FlakyTarget(TextTarget):
    tags = frozenset()

    def __init__(self, key: str) -> None:
        self.key, self.label, self.scheme = key, f"test://{key}", "test"
        self.down = False
        self.blips = 0  # the next sends that fail, whatever they are (a 503 as it comes back)
        self.refuses: set[str] = set()  # titles it rejects for their content
        self.sent: list[str] = []
        self.tries = 0

    def wants(self, tags: object) -> bool:
        return True

    def send(self, title: str, body: str, notify_type: str) -> None:
        self.tries += 1
        if self.blips > 0:
            self.blips -= 1
            raise ValueError("blip")
        if self.down or title in self.refuses:
            raise ValueError("refused")
        self.sent.append(title)


def make(tmp_path, *targets: FlakyTarget, retry_for: str = "1d"):  # noqa: ANN201
    config = parse_config({"state": {"path": str(tmp_path / "db")},
                           "notify": {"retry_initial": "10s", "retry_max": "10s", "retry_for": retry_for}})
    clock = [100.0]
    notifier = Notifier(config, list(targets), None, clock=lambda: clock[0])  # type: ignore[arg-type]
    store = DeliveryStore(connect(config.state_path))

    def write(target: FlakyTarget, title: str, about: str = "a1") -> None:
        store.dispatch([], [{"target_key": target.key, "target_label": target.label, "scheme": "test",
                             "title": title, "body": title, "notify_type": "info", "about": as_about(about)}], clock[0])

    def run(until: float, tick: float = 0.5) -> None:
        while clock[0] < until:
            notifier.step(clock[0])
            clock[0] += tick

    run.clock = clock  # type: ignore[attr-defined]
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


def test_a_long_outage_and_one_more_failure_as_the_target_comes_back(tmp_path):
    slack = FlakyTarget("slack")
    write, run = make(tmp_path, slack)
    slack.down = True
    write(slack, "[WARNING] feed crashed")
    run(135)  # failed 4 times
    write(slack, "[RESOLVED] feed is running again")
    run(142)
    slack.down, slack.blips = False, 1  # the target is back, but answers one more 503
    run(200)
    assert slack.sent == ["[WARNING] feed crashed", "[RESOLVED] feed is running again"]


def test_a_message_the_target_refuses_holds_back_only_those_about_the_same_alert(tmp_path):
    slack = FlakyTarget("slack")
    write, run = make(tmp_path, slack)
    slack.refuses = {"[WARNING] too big"}
    write(slack, "[WARNING] too big", "a1")
    write(slack, "[WARNING] quotes crashed", "a2")
    write(slack, "[RESOLVED] too big is running again", "a1")
    run(112)
    assert slack.sent == ["[WARNING] quotes crashed"]  # another alert goes on (after the target's backoff)
    for i in range(3, 60):  # the target keeps accepting other messages: it refuses that one for its content
        write(slack, f"[WARNING] p{i} crashed", f"a{i}")
        run(112 + 60 * (i - 2), tick=2.0)
        if i == 30:  # 5 refusals, but not yet for 30 minutes: a target that rate-limits must not lose it
            assert "[RESOLVED] too big is running again" not in slack.sent
    assert "[RESOLVED] too big is running again" in slack.sent  # refused 5 times over 30 minutes: it follows
    assert "[WARNING] too big" not in slack.sent


def test_with_nothing_else_accepted_a_refused_message_waits_for_retry_for(tmp_path):
    slack = FlakyTarget("slack")
    write, run = make(tmp_path, slack, retry_for="1m")
    slack.refuses = {"[WARNING] too big"}
    write(slack, "[WARNING] too big", "a1")
    write(slack, "[RESOLVED] too big is running again", "a1")
    run(150)
    assert slack.sent == []  # down, or refusing that one: it cannot tell, so the order holds
    run(175)
    assert slack.sent == ["[RESOLVED] too big is running again"]


def test_a_hanging_target_costs_one_failure_per_pass_and_a_working_one_goes_first(tmp_path):
    hung, mail = FlakyTarget("a-hung"), FlakyTarget("b-mail")
    write, run = make(tmp_path, hung, mail)
    hung.down = True
    for i in range(20):
        write(hung, f"[WARNING] p{i} crashed", f"a{i}")
    run(100.5)
    assert hung.tries == 1  # one failure ends this target's pass
    write(mail, "[CRITICAL] feed is FATAL", "a99")
    run(101)
    assert mail.sent == ["[CRITICAL] feed is FATAL"]


def test_a_target_that_is_down_is_tried_once_per_backoff_not_once_per_message(tmp_path):
    dead = FlakyTarget("dead")
    write, run = make(tmp_path, dead)
    dead.down = True
    for i in range(300):
        write(dead, f"[WARNING] p{i} crashed", f"a{i}")
    run(700)  # 10 minutes, a 10 s backoff
    assert 55 <= dead.tries <= 62, dead.tries
    dead.down = False
    run(720)
    assert len(dead.sent) == 300


def test_a_clock_stepped_back_does_not_hold_messages_for_the_size_of_the_step(tmp_path):
    slack = FlakyTarget("slack")
    write, run = make(tmp_path, slack)
    slack.down = True
    write(slack, "[WARNING] feed crashed")
    run(101)
    write(slack, "[RESOLVED] feed is running again")
    run.clock[0] = 100.0 - 3600  # an hour back; the retry was due at 110 on the old clock
    slack.down = False
    run(100.0 - 3600 + 12)  # retry_max (10 s) at most
    assert slack.sent == ["[WARNING] feed crashed", "[RESOLVED] feed is running again"]


def test_a_clock_stepped_back_less_than_retry_max_moves_the_retries_with_it(tmp_path):
    config = parse_config({"state": {"path": str(tmp_path / "db")}})  # retries 2s doubling to 5m
    clock = [10000.0]
    slack = FlakyTarget("slack")
    notifier = Notifier(config, [slack], None, clock=lambda: clock[0])  # type: ignore[arg-type]
    DeliveryStore(connect(config.state_path)).dispatch([], [{
        "target_key": "slack", "target_label": "s", "scheme": "test", "title": "[WARNING] feed crashed",
        "body": "", "notify_type": "info", "about": as_about("a1")}], clock[0])
    slack.down = True
    notifier.step(clock[0])  # fails: retry due in 2 s
    slack.down = False
    clock[0] -= 240  # NTP steps the clock back 4 minutes
    while clock[0] < 10000.0 - 240 + 5:
        notifier.step(clock[0])
        clock[0] += 0.5
    assert slack.sent == ["[WARNING] feed crashed"]


def test_a_rate_limited_target_draining_a_backlog_loses_nothing(tmp_path):
    """A target that answers 429 beyond 5 messages in 10 s, after an outage with a backlog: some
    messages fail while others are accepted; none may be given up on as 'refused'."""
    class RateLimited(FlakyTarget):
        def send(self, title: str, body: str, notify_type: str) -> None:
            recent = [t for t in self.times if t > clock() - 10]
            if self.down or len(recent) >= 5:
                raise ValueError("429")
            self.times.append(clock())
            self.sent.append(title)

    slack = RateLimited("slack")
    slack.times = []  # type: ignore[attr-defined]
    write, run = make(tmp_path, slack)

    def clock() -> float:
        return run.clock[0]  # type: ignore[attr-defined]

    slack.down = True
    for i in range(90):
        write(slack, f"[WARNING] p{i} crashed", f"a{i}")
        run(100 + 20 * (i + 1), tick=1.0)
        if i == 45:
            slack.down = False
    run(100 + 20 * 90 + 3600, tick=2.0)
    assert len(slack.sent) == 90


def test_queues_are_per_target_by_topic_and_working_targets_come_first():
    def msg(i: int, key: str, due: float, about: str, attempts: int = 0) -> OutboxMessage:
        return OutboxMessage(i, key, key, "t", f"m{i}", "", "", 0.0, attempts, due, as_about(about))

    queues, wake = delivery_queues([msg(1, "a", 50, "a1", 1), msg(2, "a", 0, "a1"), msg(3, "a", 0, "a2"),
                                    msg(4, "b", 0, "a1"), msg(5, "b", 0, "a3")], 10)
    assert [[m.id for m in q] for q in queues] == [[4, 5], [3]] and wake == 50  # b is not failing: first
    queues, wake = delivery_queues([msg(1, "a", 0, ""), msg(2, "a", 0, "a2")], 10)
    assert [[m.id for m in q] for q in queues] == [[1]]  # a row from an older store orders with all
    queues, wake = delivery_queues([msg(1, "a", 0, "system"), msg(2, "a", 0, "repost a2"), msg(3, "a", 0, "a2")], 10)
    assert [[m.id for m in q] for q in queues] == [[1, 2]]


def test_reposts_to_a_target_that_is_down_do_not_pile_up(tmp_path):
    store = DeliveryStore(connect(str(tmp_path / "db")))
    for t in range(5):
        store.dispatch([], [{"target_key": "am", "target_label": "am", "scheme": "http", "title": "alertmanager",
                             "body": f"[{t}]", "notify_type": "", "about": as_about("repost a1")}], 100.0 + t)
    assert [store.with_text(m).body for m in store.pending_messages()] == ["[4]"]


def test_one_targets_backlog_never_hides_another_targets_messages(tmp_path):
    store = DeliveryStore(connect(str(tmp_path / "db")))
    backlog = [{"target_key": "a", "target_label": "a", "scheme": "t", "title": f"m{i}", "body": "",
                "notify_type": "", "about": as_about(f"a{i}")} for i in range(2500)]
    store.dispatch([], [*backlog, {**backlog[0], "target_key": "b", "title": "for b"}], 100.0)
    pending = store.pending_messages(per_target=1000)
    assert len(pending) == 1001 and store.with_text(pending[-1]).title == "for b"


@pytest.mark.long
def test_random_outages_blips_and_refusals_keep_each_alerts_order(tmp_path):
    """Order per alert and target, nothing sent twice, nothing lost (refused ones aside), over
    random schedules: targets down and up, single failed requests, messages refused for good."""
    for seed in range(150):
        rnd = random.Random(seed)
        targets = [FlakyTarget(f"t{i}") for i in range(rnd.randint(1, 3))]
        write, run = make(tmp_path / str(seed), *targets, retry_for="1h")
        written: dict[str, list[str]] = {t.key: [] for t in targets}
        t = 100.0
        for step in range(rnd.randint(5, 40)):
            target = rnd.choice(targets)
            alert = rnd.randint(1, 4)
            title = f"{step} a{alert}"
            if rnd.random() < 0.05:
                target.refuses.add(title)
            write(target, title, f"a{alert}")
            written[target.key].append(title)
            for other in targets:
                other.down = rnd.random() < 0.4
                other.blips = rnd.randint(0, 2) if rnd.random() < 0.3 else 0
            t += rnd.choice([0.5, 3, 15, 60])
            run(t)
        for target in targets:
            target.down, target.blips = False, 0
        run(t + 3700, tick=5.0)  # retry_for runs out for the refused ones, then the rest follow
        for target in targets:
            sent = target.sent
            assert len(sent) == len(set(sent)), (seed, sent)
            expected = [m for m in written[target.key] if m not in target.refuses]
            assert sorted(sent) == sorted(expected), (seed, target.key)
            for alert in range(1, 5):
                mine = [m for m in sent if m.endswith(f" a{alert}")]
                assert mine == [m for m in expected if m.endswith(f" a{alert}")], (seed, target.key, alert)


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
