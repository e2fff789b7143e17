"""A program that logs a line every 0.2 s to stdout, for log evidence tests. Steered by flag
files in a directory (argv[1]): burst.<name> makes it write 1.2 MB at once (past a 1MB
stdout_logfile_maxbytes: supervisord rotates the log) and is removed."""

import os
import sys
import time

root = sys.argv[1]
name = os.environ.get("SUPERVISOR_PROCESS_NAME", "chatter")
burst = os.path.join(root, f"burst.{name}")
n = 0
while True:
    n += 1
    print(f"{name}: tick {n}", flush=True)
    if os.path.exists(burst):
        os.unlink(burst)
        for _ in range(1200):
            sys.stdout.write("x" * 1023 + "\n")
        sys.stdout.flush()
    time.sleep(0.2)
