"""Loaded by the listener under `python -m bench.trace_calls` (on its PYTHONPATH): records every
call from one of lookout's files into another, in every thread, to $LOOKOUT_TRACE_FILE.

One line per call between files: monotonic ns, thread name, caller file, callee file, callee
function. Only the listener process traces (its command line names lookout.listener)."""

import os
import sys
import threading
import time

_OUT = os.environ.get("LOOKOUT_TRACE_FILE", "")
_ROOTS = tuple(r for r in os.environ.get("LOOKOUT_TRACE_ROOTS", "").split(os.pathsep) if r)


def _is_listener() -> bool:
    try:
        with open("/proc/self/cmdline", "rb") as f:
            return b"lookout.listener" in f.read()
    except OSError:
        return False


def _install() -> None:
    fd = os.open(_OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    ours: dict[str, str | None] = {}

    def rel(path: str) -> str | None:
        got = ours.get(path, "")
        if got == "":
            real = os.path.realpath(path)
            got = next((os.path.relpath(real, os.path.dirname(r)) for r in _ROOTS if real.startswith(r + os.sep)),
                       None)
            ours[path] = got
        return got

    def profile(frame, event, arg):  # noqa: ANN001, ANN202
        if event != "call":
            return
        caller = frame.f_back
        if caller is None:
            return
        callee_file, caller_file = rel(frame.f_code.co_filename), rel(caller.f_code.co_filename)
        if callee_file and caller_file and callee_file != caller_file:
            line = (f"{time.monotonic_ns()}\t{threading.current_thread().name}\t{caller_file}\t{callee_file}\t"
                    f"{frame.f_code.co_name}\n")
            os.write(fd, line.encode())

    sys.setprofile(profile)
    threading.setprofile(profile)


if _OUT and _ROOTS and _is_listener():
    _install()
