"""Exporter pieces without a supervisord: fault handling and the text encoder."""

from __future__ import annotations

import xmlrpc.client

from prometheus_client.parser import text_string_to_metric_families

from lookout.config import parse_config
from lookout.exporter.metrics import LabelCache, build_families, encode
from lookout.exporter.source import ProcessView, ScrapeData, Source
from lookout.rpc import SupervisorUnavailable


class StubClient:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def multicall(self, calls):  # noqa: ANN001, ANN201
        raise self.error


def source_with(tmp_path, error: Exception) -> Source:
    src = Source(parse_config({"state": {"path": str(tmp_path / "none.db")}}))
    src.client = StubClient(error)  # type: ignore[assignment]
    return src


def test_reload_is_restarting_not_down(tmp_path):
    data = source_with(tmp_path, xmlrpc.client.Fault(6, "SHUTDOWN_STATE")).read()
    assert (data.up, data.state, data.source) == (True, "RESTARTING", "supervisord")


def test_unreachable_is_down(tmp_path):
    data = source_with(tmp_path, SupervisorUnavailable("FileNotFoundError")).read()
    assert (data.up, data.state) == (False, "SHUTDOWN")


def test_encoding_round_trips_through_the_prometheus_parser():
    data = ScrapeData(source="store", up=True, state="RUNNING", version="4.3.0", identification='id "x"\\y',
                      processes=[ProcessView("g", 'we"ird\nname', "RUNNING", 42, 1.5e9, 12.25, -1, 1.6e9, 3, 4, True)],
                      last_event_at=1.7e9, outbox_pending=2, notifications={("json", "success"): 5})
    text = encode(build_families(data, None, LabelCache()))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    labels = (("group", "g"), ("name", 'we"ird\nname'))
    assert samples[("supervisor_process_restarts_total", labels)] == 3
    assert samples[("supervisor_process_exit_status", labels)] == -1
    assert samples[("supervisor_process_state_code", labels)] == 20
    assert samples[("supervisor_process_state_since_timestamp_seconds", labels)] == 1.6e9
    assert samples[("supervisor_process_state", (*labels, ("state", "RUNNING")))] == 1
    assert samples[("supervisord_info", (("identification", 'id "x"\\y'), ("version", "4.3.0")))] == 1
    assert samples[("lookout_notifications_total", (("result", "success"), ("target", "json")))] == 5
