from __future__ import annotations

import pytest

from .harness import Supervisor, Webhook, ensure_debian_tool


@pytest.fixture
def webhook():
    hook = Webhook().start()
    yield hook
    hook.stop()


@pytest.fixture
def supervisor_factory(tmp_path):
    started: list[Supervisor] = []

    def make(programs: str, settings: dict, **kwargs) -> Supervisor:
        sup = Supervisor(tmp_path / f"s{len(started)}", programs, settings, **kwargs)
        started.append(sup)
        return sup

    yield make
    for sup in started:
        sup.stop()


@pytest.fixture(scope="session")
def promtool() -> str:
    return ensure_debian_tool("promtool", "prometheus")


def fast_alerts(webhook: Webhook, **alerts) -> dict:
    """Test-speed timers; everything else as shipped."""
    return {
        "notify": {"urls": [webhook.url()], "retry_initial": "500ms", "retry_max": "2s"},
        "alerts": {"group_wait": "1s", "stable_after": "3s", "exit_grace": "2s", **alerts},
        "listener": {"log_level": "debug"},
    }
