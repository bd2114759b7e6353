"""The dashboard mounted in your own Trio web app, on the client the app already has."""

from __future__ import annotations

import functools
import json
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import rivertrio
import rivertrio.ui


@dataclass
class Report(rivertrio.JobArgs, kind="monthly_report"):
    month: str


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("the app's own page")


async def main(database_url: str | None = None, schema: str | None = None) -> list[str]:
    """Serve an app with the dashboard under /rivertrio; return the kinds its API lists."""
    config = rivertrio.Config(schema=schema)
    async with rivertrio.open_client(config, database_url=database_url) as client:
        await client.insert(Report(month="2026-01"))

        # --8<-- [start:mount]
        dashboard = rivertrio.ui.create_app(client=client, auth_token="change-me-to-a-secret")

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            # A mounted app's lifespan is not run for it: enter the dashboard's here
            # (it counts large tables in the background while it runs).
            async with dashboard.router.lifespan_context(dashboard):
                yield

        app = Starlette(
            routes=[Route("/", home), Mount("/rivertrio", app=dashboard)],
            lifespan=lifespan,
        )
        # --8<-- [end:mount]

        server = HypercornConfig()
        server.bind = ["127.0.0.1:0"]
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(functools.partial(serve, app, server))
            request = urllib.request.Request(
                binds[0] + "/rivertrio/api/jobs",
                headers={"Authorization": "Bearer change-me-to-a-secret"},
            )
            body = await trio.to_thread.run_sync(lambda: urllib.request.urlopen(request).read())
            nursery.cancel_scope.cancel()
    return [job["kind"] for job in json.loads(body)["jobs"]]


if __name__ == "__main__":
    print(trio.run(main))
