"""What the command lines of all three programs share: one-line usage errors (exit 2), the
process-pattern help, the version, and the one note when no config file was found."""

from __future__ import annotations

import argparse
import sys

from .config import Config, no_config_note


class OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line, exit status 2, like every other bad input."""

    def error(self, message: str):  # noqa: ANN201
        self.exit(2, f"{self.prog}: {message} (see {self.prog.split()[0]} --help)\n")


PATTERN_HELP = ("a process as supervisorctl names it ('feed', 'group:name'), a whole group ('pool', 'pool:*'), "
                "or a glob ('pool_0*', '*:feed')")
def silence_id(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a silence id (see `silences`)")
    return int(text)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("supervisor-lookout")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "(not installed)"


def say_once_if_no_config(config: Config, prog: str) -> None:
    note = no_config_note(config)
    if note:
        print(f"{prog}: {note}", file=sys.stderr)
