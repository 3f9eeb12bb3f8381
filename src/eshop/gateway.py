"""gateway: the edge.  An ASGI reverse proxy for ``/graphql`` to the order service (httpx).

It forwards the body, the content type and the status, nothing else the client sent: no
cookies, no client-chosen trace context.  Whether inbound trace context from the internet is
trusted is tracebridge's ``TRACEBRIDGE_INBOUND_CONTEXT`` policy, set on this service only.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI, Request, Response

from eshop.config import Config
from eshop.service import http_app, serve_http

_FORWARDED = ("content-type", "accept")


def create_app(config: Config) -> FastAPI:
    client = httpx.AsyncClient(base_url=config.order_url, timeout=30)

    async def shutdown(app: Any) -> None:
        await client.aclose()

    app = http_app("gateway", config, shutdown=shutdown)

    @app.api_route("/graphql", methods=["GET", "POST"])
    async def graphql(request: Request) -> Response:
        headers = {name: request.headers[name] for name in _FORWARDED if name in request.headers}
        try:
            upstream = await client.request(
                request.method,
                "/graphql",
                content=await request.body(),
                headers=headers,
                params=request.query_params,
            )
        except httpx.HTTPError as error:
            return Response(
                f'{{"errors": [{{"message": "order service unavailable: {type(error).__name__}"}}]}}',
                status_code=502,
                media_type="application/json",
            )
        return Response(
            upstream.content,
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type", "application/json"),
        )

    return app


def main() -> None:
    serve_http(create_app)


if __name__ == "__main__":
    main()
