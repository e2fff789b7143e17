"""A service with a health endpoint, steered by flag files in a directory (argv[2]):
  hang.<name>  the endpoint accepts and never answers (removed at start: a restart heals it)
  fail.<name>  the endpoint answers 503
  HEALTHY_AFTER=N (environment): 503 "warming up" for N seconds after start
GET /healthz answers "ok". argv[1] is the port."""

import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, root = int(sys.argv[1]), sys.argv[2]
name = os.environ.get("SUPERVISOR_PROCESS_NAME", "svc")
started = time.time()
healthy_after = float(os.environ.get("HEALTHY_AFTER", "0"))
hang = os.path.join(root, f"hang.{name}")
if os.path.exists(hang):
    os.remove(hang)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if os.path.exists(hang):
            time.sleep(3600)
        if os.path.exists(os.path.join(root, f"fail.{name}")):
            code, body = 503, b"down"
        elif time.time() - started < healthy_after:
            code, body = 503, b"warming up"
        else:
            code, body = 200, b"ok"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
server.daemon_threads = True
print(f"{name} listening on {port}", flush=True)
server.serve_forever()
