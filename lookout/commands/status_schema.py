"""The shape of `lookout status --json`: a list of these objects (`lookout status --json-schema`)."""

from __future__ import annotations

from typing import Any

STATUS_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "lookout status --json",
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name", "group", "namespec", "state", "pid", "uptime_seconds", "description", "healthy",
                     "probes", "restarts_1h", "restarts_24h", "last_exit", "alerts", "silenced_until", "lookout",
                     "orphans", "ok"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "description": "as supervisorctl shows it: 'reconciler' or 'group:name'"},
            "group": {"type": "string"},
            "namespec": {"type": "string", "description": "always group:name"},
            "state": {"enum": ["STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL",
                               "UNKNOWN"]},
            "pid": {"type": "integer"},
            "uptime_seconds": {"type": ["number", "null"], "description": "null unless RUNNING"},
            "description": {"type": "string", "description": "supervisord's own description"},
            "healthy": {"type": ["boolean", "null"], "description": "null without probes or not judged yet"},
            "probes": {"type": "object", "additionalProperties": {
                "type": "object", "required": ["healthy", "last_ok", "last_detail", "judged"],
                "properties": {"healthy": {"type": ["boolean", "null"]}, "last_ok": {"type": ["boolean", "null"]},
                               "last_detail": {"type": "string"},
                               "judged": {"type": "boolean", "description": "false: its last run could not "
                                          "read its evidence (a log file deleted) and judged nothing; "
                                          "last_detail says why"}}}},
            "restarts_1h": {"type": "integer"},
            "restarts_24h": {"type": "integer"},
            "last_exit": {"type": ["object", "null"], "required": ["text", "status", "at"], "properties": {
                "text": {"type": "string"}, "status": {"type": ["integer", "null"]},
                "at": {"type": ["number", "null"]}}},
            "alerts": {"type": "array", "items": {
                "type": "object", "required": ["kind", "severity", "since", "detail"],
                "properties": {"kind": {"type": "string"}, "severity": {"enum": ["info", "warning", "critical"]},
                               "since": {"type": "number"}, "detail": {"type": "string"}}}},
            "silenced_until": {"type": ["number", "null"]},
            "lookout": {"type": "object", "description": "what lookout does or may do about it",
                        "required": ["held_since", "held_reason", "braked", "starts_again_at", "stopped_by",
                                     "action"],
                        "additionalProperties": False, "properties": {
                            "held_since": {"type": ["number", "null"],
                                           "description": "`lookout hold`: lookout leaves it as it is"},
                            "held_reason": {"type": "string"},
                            "braked": {"type": "boolean", "description": "the crash-loop brake holds it"},
                            "starts_again_at": {"type": ["number", "null"],
                                                "description": "when the brake starts it again"},
                            "stopped_by": {"enum": ["", "operator", "lookout"]},
                            "action": {"type": "string", "description": "lookout's action in flight, if any"}}},
            "orphans": {"type": "array", "items": {"type": "integer"},
                        "description": "pids of this program's processes left running by a supervisord that died "
                                       "(it may run twice)"},
            "ok": {"type": "boolean", "description": "what --check counts: it runs (or is a one-shot program "
                                                     "that exited as expected, or was never started), and no "
                                                     "open alert"},
            "not_ok": {"type": "string", "description": "why --check counts it as not fine ('' when ok)"},
            "needs": {"type": "string", "description": "[[dependencies]]: what it waits for or is down for, e.g. "
                                                       "'waiting for database (database FATAL)'; '' when its needs "
                                                       "are ready or it has none"},
        },
    },
}
