"""lookout: the operator's command (placeholder until the operator commands land)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from .listener.cli import main as listener_main

    return listener_main(argv)


if __name__ == "__main__":
    sys.exit(main())
