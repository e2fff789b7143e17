"""Stands between supervisord and the listener as its [eventlistener:] command and relays the
protocol both ways; once the file named by argv[1] exists, it kills itself (SIGKILL) with the next
whole event in hand, and a forked helper writes that event to the listener after the relay's death,
keeping the listener's stdin open. The listener reads the event before any EOF and its
acknowledgement meets a closed pipe: supervisord killed in exactly that instant, made deterministic. Started again
by supervisord after that (argv[1] + '.done' exists), it only waits for its end."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

trigger = sys.argv[1]
if os.path.exists(trigger + ".done"):
    while True:
        signal.pause()
child = subprocess.Popen(sys.argv[2:], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
to_child, from_child = child.stdin.fileno(), child.stdout.fileno()
pending = b""
while True:
    readable, _, _ = select.select([0, from_child], [], [])
    if from_child in readable:
        data = os.read(from_child, 65536)
        if not data:
            sys.exit(child.wait())
        os.write(1, data)
    if 0 in readable:
        data = os.read(0, 65536)
        if not data:
            sys.exit(0)
        pending += data
        while b"\n" in pending:
            header, rest = pending.split(b"\n", 1)
            size = int(dict(token.split(b":", 1) for token in header.split())[b"len"])
            if len(rest) < size:
                break
            event, pending = header + b"\n" + rest[:size], rest[size:]
            if not os.path.exists(trigger):
                os.write(to_child, event)
                continue
            open(trigger + ".done", "w").close()
            relay = os.getpid()
            if os.fork() == 0:  # hands the event over once the relay is dead, keeping stdin open (no EOF first)
                for fd in (0, 1, from_child):
                    os.close(fd)
                while os.getppid() == relay:
                    time.sleep(0.01)
                os.write(to_child, event)
                deadline = time.monotonic() + 60
                while os.path.exists(f"/proc/{child.pid}") and time.monotonic() < deadline:
                    time.sleep(0.2)
                os._exit(0)
            os.kill(relay, signal.SIGKILL)
