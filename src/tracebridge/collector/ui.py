"""The web UI's shell: one HTML page and its static scripts and styles, served by the
collector at ``/`` — no build step, no CDN, no network call but the collector's own JSON API.

Every page (``/``, ``/trace/{id}``, ``/map``, ``/doctor``) is the same ``index.html``; the
script reads the path and query, so a filtered search or a selected span is a shareable link.
A strict Content-Security-Policy forbids inline script and any other origin: even if some
span-derived text were ever inserted as markup, it could not run.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

UI_DIR = Path(__file__).resolve().parent / "ui"
PAGES = ("/", "/trace/{trace_id}", "/map", "/doctor")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def is_shell(path: str) -> bool:
    """A request for the UI's shell or assets: they hold no trace data, so need no token
    (the page asks for one when the API answers 401)."""
    return path in ("/", "/map", "/doctor") or path.startswith(("/trace/", "/ui/"))


class _Assets(StaticFiles):
    async def get_response(self, path: str, scope: dict) -> Response:  # type: ignore[override, type-arg]
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def _page(request: Request) -> Response:
    return FileResponse(UI_DIR / "index.html", media_type="text/html", headers=SECURITY_HEADERS)


def routes() -> list[BaseRoute]:
    return [*(Route(path, _page) for path in PAGES), Mount("/ui", app=_Assets(directory=UI_DIR))]
