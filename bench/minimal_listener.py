"""The baseline: the smallest correct supervisord listener (READY, read, OK), as in
supervisor's childutils docs. It reports how many events it took and when it took the last."""

import os
import sys
import threading
import time

count = 0
last = 0.0


def report(path: str) -> None:
    while True:
        time.sleep(0.05)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{count} {last}\n")
        os.replace(tmp, path)


def main() -> None:
    global count, last
    threading.Thread(target=report, args=(os.environ["MINIMAL_REPORT"],), daemon=True).start()
    trace_path = os.environ.get("MINIMAL_TRACE")
    trace = open(trace_path, "a") if trace_path else None  # noqa: SIM115 - lives as long as we do
    stdin, stdout = sys.stdin, sys.stdout
    while True:
        stdout.write("READY\n")
        stdout.flush()
        headers = dict(t.split(":", 1) for t in stdin.readline().split())
        payload = stdin.read(int(headers["len"]))
        if trace is not None:  # when each event reached a listener: supervisord's own latency
            trace.write(f"{time.time()} {headers['eventname']} {payload.split(' ', 1)[0]}\n")
            trace.flush()
        stdout.write("RESULT 2\nOK")
        stdout.flush()
        count += 1
        last = time.time()


if __name__ == "__main__":
    main()
