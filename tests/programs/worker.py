"""A worker steered by flag files in a directory (argv[1]), for log, heartbeat and memory probes:
  logs a line every 0.3 s unless quiet.<name>; touches beat.<name> every 0.3 s unless stale.<name>;
  writes a traceback to stderr once when traceback.<name> appears;
  its child holds 120 MB while grow.<name> exists."""

import os
import subprocess
import sys
import time

root = sys.argv[1]
name = os.environ.get("SUPERVISOR_PROCESS_NAME", "worker")


def flag(kind: str) -> str:
    return os.path.join(root, f"{kind}.{name}")


if len(sys.argv) > 2 and sys.argv[2] == "child":
    ballast = b""
    parent = os.getppid()
    while os.getppid() == parent:  # ends with its worker (supervisord signals only the worker)
        if os.path.exists(flag("grow")) and not ballast:
            ballast = b"x" * (120 << 20)
        elif not os.path.exists(flag("grow")):
            ballast = b""
        time.sleep(0.1)
    sys.exit(0)

child = subprocess.Popen([sys.executable, __file__, root, "child"])
told = False
n = 0
while True:
    n += 1
    if not os.path.exists(flag("quiet")):
        print(f"{name}: tick {n}", flush=True)
    if not os.path.exists(flag("stale")):
        with open(flag("beat"), "w") as f:
            f.write(str(n))
    if os.path.exists(flag("traceback")) and not told:
        told = True
        print("Traceback (most recent call last):\n  File \"worker.py\", line 42, in fill\n"
              "ValueError: order book crossed", file=sys.stderr, flush=True)
    time.sleep(0.3)
