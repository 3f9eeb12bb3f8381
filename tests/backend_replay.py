"""Serve a trace backend's recorded answers (tests/data/backends/<name>/index.json) on a real
socket: the first entry whose path (or path prefix) and listed query parameters match answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

BACKENDS = Path(__file__).parent / "data" / "backends"


@contextmanager
def replay(name: str) -> Iterator[str]:
    folder = BACKENDS / name
    index = json.loads((folder / "index.json").read_text())
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            path, query = unquote(url.path), {k: v[0] for k, v in parse_qs(url.query).items()}
            requests.append(self.path)
            for entry in index:
                if entry.get("prefix") and not path.startswith(entry["path"]):
                    continue
                if not entry.get("prefix") and path != entry["path"]:
                    continue
                if any(query.get(key) != value for key, value in entry.get("query", {}).items()):
                    continue
                body = (folder / entry["file"]).read_bytes()
                self.send_response(entry.get("status", 200))
                self.send_header("Content-Type", entry.get("type", "application/json"))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_error(404, f"no recorded answer for {self.path}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
