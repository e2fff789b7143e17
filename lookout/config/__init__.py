"""lookout.toml: one file for the listener and the exporter.

Every key is validated before anything touches supervisord. An error names the key and the
problem in one line (``ConfigError``); the commands print it and exit with status 2.
    values.py  durations, sizes, bounds, the Section reader
    model.py   the settings dataclasses
    probes.py  [[probes]], [remediation], [[alerts.groups]]
    load.py    TOML -> Config
"""

from .load import crash_loop_settings, load_config, no_config_note, parse_config
from .model import (
    DEFAULT_SERVERURL,
    DEFAULT_STATE_PATH,
    SEVERITIES,
    AlertmanagerSettings,
    AlertSettings,
    Config,
    CrashLoop,
    DeadmanSettings,
    ExporterSettings,
    HistorySettings,
    ListenerSettings,
    NotifySettings,
    ProgramRule,
    SupervisorSettings,
)
from .probes import ACTIONS, KINDS, PLACEHOLDERS, GroupRule, ProbeSpec, RemediationSettings, placeholders_in
from .values import (
    ConfigError,
    Section,
    UsageError,
    UserError,
    cli_duration,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
    shown,
)

__all__ = [
    "DEFAULT_SERVERURL", "DEFAULT_STATE_PATH", "SEVERITIES", "AlertSettings", "AlertmanagerSettings", "Config",
    "ConfigError", "CrashLoop", "DeadmanSettings", "ExporterSettings", "HistorySettings", "ListenerSettings",
    "NotifySettings",
    "ProgramRule", "Section",
    "SupervisorSettings", "crash_loop_settings", "format_duration", "format_size", "load_config", "parse_config",
    "parse_duration", "parse_size", "shown", "ACTIONS", "KINDS", "PLACEHOLDERS", "GroupRule", "ProbeSpec",
    "RemediationSettings", "placeholders_in", "UsageError", "UserError", "cli_duration", "no_config_note",
]
