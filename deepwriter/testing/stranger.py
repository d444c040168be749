"""Someone else's server on a port a run's replica would take: it answers `GET /v1/models` with 200 and a
model of its own (any key, or only its own `key`: 401 otherwise), and counts every other request it gets
(a run must send it none)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import List, Optional


class Stranger:
    def __init__(self, port: int, host: str = "0.0.0.0", model: str = "someone-elses-model", key: Optional[str] = None):
        self.model, self.key, self.requests = model, key, []  # type: ignore[var-annotated]
        self.lookups: List[str] = []  # its /v1/models answers
        stranger = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    stranger.lookups.append(self.path)
                    if stranger.key and self.headers.get("Authorization") != f"Bearer {stranger.key}":
                        self._reply(401, {"error": "Unauthorized"})
                        return
                    self._reply(200, {"object": "list", "data": [{"id": stranger.model, "object": "model"}]})
                else:
                    stranger.requests.append(f"GET {self.path}")
                    self._reply(404, {"error": "not here"})

            def do_POST(self) -> None:
                stranger.requests.append(f"POST {self.path}")
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._reply(200, {"choices": [{"text": "a stranger's answer", "message": {"content": "no"}}]})

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.url = f"http://127.0.0.1:{port}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Stranger":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
