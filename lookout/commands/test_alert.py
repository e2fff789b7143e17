"""`lookout test-alert`: one test message to every target at once, as the listener sends them."""

from __future__ import annotations

import threading

from ..config import Config
from ..listener.notifier.lanes import Job, Lanes, Result, Verdict
from ..listener.notifier.targets import build_targets


def test_alert(config: Config) -> int:
    """One test message to every target at once, each on its lane, as the listener sends them:
    a target that hangs is reported at its deadline and keeps no other waiting."""
    targets = build_targets(config)
    if not targets:
        print("no notify targets configured (notify.urls, notify.config, $LOOKOUT_NOTIFY_URLS)")
        return 1
    failed = 0
    wake = threading.Event()
    lanes = Lanes(targets, config.notify.timeout, wake)
    lanes.start()
    for t in targets:
        payload = t.render_test(config.hostname)
        lanes.submit(Job(t.key, payload.title, payload.body, payload.notify_type, None))
    answers: dict[str, Result] = {}
    while len(answers) < len(targets):  # each lane answers by its deadline (and a grace) at the latest
        wake.wait(0.5)
        wake.clear()
        answers.update((r.job.target_key, r) for r in lanes.results())
    lanes.stop()
    for t in targets:
        result = answers[t.key]
        if result.verdict is Verdict.SENT:
            print(f"ok      {t.label}")
            continue
        failed += 1  # the reason the delivery library gave, secrets scrubbed
        maybe = " (maybe delivered)" if result.verdict is Verdict.MAYBE else ""
        print(f"FAILED  {t.label}: {result.error}{maybe}")
    return 1 if failed else 0
