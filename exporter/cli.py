"""lookout-exporter entry point (stub until the exporter lands)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("lookout-exporter: not implemented yet", file=sys.stderr)
    return 2
