"""A wall-clock step for tests: NTP stepping the clock, a VM restored from a snapshot.

On the PYTHONPATH of a supervisord started with `Supervisor(..., clock_step=True)` (and so of
its listener, its Python programs and `supervisorctl`): time.time() and time.time_ns() add the
offset, in seconds, written in the file $LOOKOUT_TEST_CLOCK_OFFSET_FILE (absent or empty: 0).
The monotonic clock is left alone, as a real step leaves it. libfaketime cannot do this here:
it makes Python's time.sleep fail.
"""

import os
import time as _time

_PATH = os.environ.get("LOOKOUT_TEST_CLOCK_OFFSET_FILE", "")
_real_time, _real_time_ns = _time.time, _time.time_ns
_cache = [0.0, None]  # offset, the identity of the file it was read from


def _offset() -> float:
    """Re-read when the file changed (a stat per call: the next call after a step sees it)."""
    try:
        st = os.stat(_PATH)
        ident = (st.st_ino, st.st_mtime_ns, st.st_size)
    except OSError:
        ident = None
    if ident != _cache[1]:
        _cache[1] = ident
        try:
            with open(_PATH, encoding="ascii") as f:
                _cache[0] = float(f.read().strip() or 0.0)
        except (OSError, ValueError):
            _cache[0] = 0.0
    return _cache[0]


def _time_() -> float:
    return _real_time() + _offset()


def _time_ns_() -> int:
    return _real_time_ns() + int(_offset() * 1e9)


if _PATH:
    _time.time, _time.time_ns = _time_, _time_ns_
