"""Real HTTP servers on 127.0.0.1 for the HTTP tests: a WSGI app (werkzeug), an ASGI app
(uvicorn), an aiohttp application, each on its own free port."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator


class Served:
    """A WSGI app on a real socket, in a thread."""

    def __init__(self, app: object) -> None:
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


@contextlib.asynccontextmanager
async def served_aiohttp(app: object) -> AsyncIterator[str]:
    """An aiohttp application on a real socket on 127.0.0.1; yields its base URL."""
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()


class Uvicorn:
    """An ASGI app served by a real uvicorn on 127.0.0.1, in a thread."""

    def __init__(self, app: object) -> None:
        import uvicorn

        from tracebridge.broker import free_port

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        import time

        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on port {self.port}")
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
