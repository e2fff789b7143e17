"""The store file on disk, treated as something that can fail.

- Private: a directory lookout creates is 0700, the database (and SQLite's -wal/-shm, which
  take the database's mode) 0600: alert bodies hold log tails, and supervisord creates the
  programs' own logs 0600. Only SQLite opens the file (see prepare); a symlink is refused.
- Errors classified: a disk that is full, a file locked by another process, an I/O error or a
  removed directory is StoreUnavailable (wait, retry, resume); a file that is not SQLite or
  whose pages are damaged is StoreCorrupt (moved aside at start, a fresh store created).
- Identity: a store deleted or replaced under a running process is noticed by its inode.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import tempfile
import time
from urllib.parse import quote

# SQLite primary result codes (sqlite3.Error.sqlite_errorcode & 0xff, Python 3.11+)
_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_CORRUPT_TEXT = ("file is not a database", "database disk image is malformed", "malformed database schema")


class StoreUnavailable(Exception):
    """The store cannot be read or written now; str() says why in words a person acts on."""


class StoreCorrupt(StoreUnavailable):
    """The file is not a usable SQLite database."""


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if "disk is full" in lowered or "no space" in lowered:
        return "disk full"
    if "locked" in lowered or "busy" in lowered:
        return "database is locked by another process"
    if "readonly" in lowered or "read-only" in lowered or "permission" in lowered:
        return f"not writable ({text})"
    return text


def classify(exc: BaseException) -> StoreUnavailable:
    """The StoreUnavailable (or StoreCorrupt) that a sqlite3 or OS error means."""
    code = getattr(exc, "sqlite_errorcode", None)
    text = str(exc).lower()
    if (code is not None and code & 0xFF in _CORRUPT_CODES) or any(t in text for t in _CORRUPT_TEXT):
        return StoreCorrupt(f"not a usable SQLite database ({exc})")
    return StoreUnavailable(describe(exc))


@contextlib.contextmanager
def store_errors():
    """Turn sqlite3 and OS errors into StoreUnavailable/StoreCorrupt."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise classify(exc) from exc


def check_path(path: str) -> None:
    """A path that can never be a store: a ConfigError-worthy StoreUnavailable now, not later."""
    if os.path.isdir(path):
        raise StoreUnavailable(f"{path} is a directory; state.path names the database file in it")
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.islink(name):
            raise StoreUnavailable(f"{name} is a symbolic link; lookout does not follow links for its store: "
                                   "point state.path at the real file")


def uri(path: str, mode: str) -> str:
    """A `file:` URI for sqlite3.connect(uri=True): '%', '?' and '#' in a path must not change its meaning."""
    return f"file:{quote(os.path.abspath(path))}?mode={mode}"


def prepare(path: str) -> bool:
    """Before a writer connects: the parent directory (created 0700), and no symlink at the path.
    Returns True when the store does not exist yet (the caller creates it under a private umask).

    Only SQLite opens the database file: a process that holds SQLite connections and opens and
    closes the file itself drops every POSIX lock its connections hold (locks belong to the
    process and the file), and the next connection to close anywhere then deletes the WAL under
    a live writer (SQLite's "How To Corrupt An SQLite Database File", 2.2). So modes are checked
    with lstat and fixed by path, never through a descriptor.
    """
    check_path(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700, exist_ok=True)
    for name in (path, path + "-wal", path + "-shm"):
        try:
            st = os.lstat(name)
        except FileNotFoundError:
            if name == path:
                return True
            continue
        if stat.S_ISLNK(st.st_mode):  # (check_path said so already, unless one appeared since)
            raise StoreUnavailable(f"{name} is a symbolic link; lookout does not follow links for its store: "
                                   "point state.path at the real file")
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.chmod(name, stat.S_IMODE(st.st_mode) & 0o700)  # by path: no descriptor, no lost locks
    return False


@contextlib.contextmanager
def private_umask(creating: bool):
    """While SQLite creates a new store (and its -wal/-shm take the database's mode): 0600."""
    if not creating:
        yield
        return
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def move_aside(path: str, now: float | None = None) -> str:
    """Rename a corrupt store (and its -wal/-shm) to <path>.corrupt-<time>; returns the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(now))
    target = f"{path}.corrupt-{stamp}"
    n = 1
    while os.path.exists(target):
        n += 1
        target = f"{path}.corrupt-{stamp}-{n}"
    os.replace(path, target)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(path + suffix, target + suffix)
    return target


def owner_hint(path: str) -> str:
    """'' or why another user's store cannot be used, and what to do: the listener, the exporter and
    `lookout` must run as the same user (the store is private, 0600 in a 0700 directory)."""
    import pwd

    for name in (path, os.path.dirname(os.path.abspath(path))):
        try:
            uid = os.stat(name).st_uid
        except PermissionError:
            continue  # the directory above hides it: try the directory itself
        except OSError:
            return ""
        if uid == os.geteuid():
            return ""
        try:
            owner = pwd.getpwuid(uid).pw_name
        except KeyError:
            owner = f"uid {uid}"
        return f"it belongs to {owner}: run lookout as {owner} (e.g. `sudo -u {owner} {_command()} ...`)"
    return ""


def _command() -> str:
    """This command as the user can type it again (a venv's bin is often not on PATH)."""
    import sys

    path = sys.argv[0] if sys.argv and sys.argv[0] else "lookout"
    name = os.path.basename(path)
    return path if os.path.isabs(path) and name.startswith("lookout") else "lookout"


def store_problem(path: str, exc: BaseException) -> str:
    """A reader's failure in words: what went wrong, and whose store it is when that is the cause."""
    text = str(exc)
    try:
        os.stat(path)
    except FileNotFoundError:
        if "unable to open" in text:
            return "no store there yet (has lookout-listener run with this state.path?)"
    except OSError:
        pass  # a private directory hides it: whose it is says why
    hint = owner_hint(path)
    return f"{text}; {hint}" if hint else text


def identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at path now; None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def writable_check(path: str) -> str:
    """'' when the store at path can be opened for writing, else why not (for --check-config).

    A missing file is not created (the listener may run as another user): its directory, or
    the nearest existing ancestor, must be writable instead.
    """
    try:
        check_path(path)
    except StoreUnavailable as exc:
        return str(exc)
    hint = owner_hint(path)
    if hint:
        return hint
    if not os.path.exists(path):
        ancestor = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(ancestor):
            ancestor = os.path.dirname(ancestor)
        if not os.path.isdir(ancestor):
            return f"{ancestor} is not a directory"
        try:  # really try: root passes os.access() even on a read-only mount's directories
            fd, probe = tempfile.mkstemp(dir=ancestor, prefix=".lookout-check-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            return f"cannot create it: {ancestor} is not writable ({exc.strerror})"
        return ""
    if not os.access(path, os.R_OK | os.W_OK):
        return "not readable and writable by this user"
    try:
        conn = sqlite3.connect(uri(path, "rw"), uri=True, timeout=2.0, isolation_level=None)
        try:
            row = conn.execute("PRAGMA quick_check").fetchone()
            if not row or row[0] != "ok":
                return f"not a usable SQLite database (quick_check: {row[0] if row else 'no answer'})"
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    except (sqlite3.Error, OSError) as exc:
        problem = classify(exc)
        return str(problem) + (": the listener moves it aside at start" if isinstance(problem, StoreCorrupt) else "")
    return ""
