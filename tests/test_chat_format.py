"""Issue 9: chat targets that render markdown get the log tail as a code block and the dashboard
link as a link; plain targets (webhooks, email) stay plain text. Mattermost's own server is
the one thing we cannot run: apprise's mmost:// plugin posts to the local webhook instead."""

from __future__ import annotations

from .conftest import fast_alerts
from .harness import wait_for
from .test_crash_loop import CRASHER

DASHBOARD = "https://grafana.example.com/d/lookout-process?var-instance={host}&var-group={group}&var-name={name}"


def test_markdown_for_chat_plain_for_webhooks(supervisor_factory, webhook):
    settings = fast_alerts(webhook, crash_loop={"restarts": 3, "within": "1m"}, host="trading 01")
    settings["notify"]["urls"] = [webhook.url(), f"mmost://127.0.0.1:{webhook.port}/lookoutTOKEN123"]
    settings["notify"]["dashboard_url"] = DASHBOARD
    supervisor_factory(CRASHER, settings).start()
    chat = wait_for(lambda: [m for m in webhook.messages if m.path.startswith("/hooks/")
                             and "is crash-looping" in m.body], 30, "the Mattermost post")[0]
    # (each target has its post: wait for the plain one too, whichever was sent first)
    plain = wait_for(lambda: [m for m in webhook.matching("flaky is crash-looping") if m.path == "/hook"], 10,
                     "the plain webhook's post")[0]
    link = "https://grafana.example.com/d/lookout-process?var-instance=trading%2001&var-group=flaky&var-name=flaky"
    assert "```\nflaky: cannot bind port 7001" in chat.body or "```" in chat.body and "flaky: cannot bind" in chat.body
    assert f"[flaky]({link})" in chat.body
    assert "```" not in plain.body and "    | flaky: cannot bind port 7001" in plain.body
    assert f"dashboard: {link}" in plain.body
