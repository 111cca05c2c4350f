#!/usr/bin/env python3
"""tests/e2e/collector.py - a loopback telemetry collector for the end-to-end tests.

Binds 127.0.0.1 only (never another address), on the given port or, with --port 0 (the
default), on a free one chosen by the kernel, which it writes to --port-file once it is
listening (written under a temporary name and renamed, so a reader never sees half a
number). Every POST body is stored, before the answer is sent, as DIR/NNNNNN.json
(written under a temporary name and renamed) with the request line and headers beside it
in DIR/NNNNNN.meta.json; the answer is 200 with an empty JSON object. Any other method
gets 405. SIGTERM or SIGINT stops it cleanly.

Only the standard library is used.

    python3 tests/e2e/collector.py --dir BODIES --port-file PORTFILE [--port 0]
"""

import argparse
import http.server
import json
import os
import signal
import sys
import threading

MAX_BODY = 16 * 1024 * 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True, help="directory the bodies are stored in")
    ap.add_argument("--port-file", required=True, help="file the bound port is written to")
    ap.add_argument("--port", type=int, default=0, help="port to bind (0: a free one)")
    args = ap.parse_args()

    os.makedirs(args.dir, exist_ok=True)
    lock = threading.Lock()
    counter = [0]

    def store(body: bytes, meta: dict) -> int:
        with lock:
            counter[0] += 1
            n = counter[0]
        base = os.path.join(args.dir, "%06d" % n)
        for suffix, data in ((".meta.json", json.dumps(meta).encode()), (".json", body)):
            tmp = base + suffix + ".tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, base + suffix)
        return n

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "telespool-e2e-collector/1"

        def log_message(self, fmt, *a):  # quiet: the test prints its own summary
            pass

        def _answer(self, code: int, body: bytes = b"{}") -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                total = 0
                while True:
                    line = self.rfile.readline(1024)
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    total += size
                    if total > MAX_BODY:
                        raise ValueError("body too large")
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline(1024)
            length = int(self.headers.get("Content-Length", "0"))
            if length > MAX_BODY:
                raise ValueError("body too large")
            return self.rfile.read(length)

        def do_POST(self):
            try:
                body = self._read_body()
            except (ValueError, OSError):
                self.close_connection = True
                self._answer(400, b'{"error": "unreadable body"}')
                return
            meta = {
                "method": "POST",
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "length": len(body),
            }
            store(body, meta)
            self._answer(200)

        def _not_allowed(self):
            self.close_connection = True
            self._answer(405, b'{"error": "POST only"}')

        do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = _not_allowed

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    srv = Server(("127.0.0.1", args.port), Handler)
    port = srv.server_address[1]
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.rename(tmp, args.port_file)

    def stop(signum, frame):
        # shutdown() blocks until serve_forever returns: call it from another thread.
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    srv.serve_forever(poll_interval=0.2)
    srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
