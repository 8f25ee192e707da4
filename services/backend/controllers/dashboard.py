"""The web dashboard: static files, no build step, nothing from a CDN.

    GET /                                  the single page (services/backend/static/index.html);
                                           `/?token=<API token>` (the link `trainbus up`
                                           prints) hands the page the token for its writes
    GET /static/<name>                     its files; charts.js comes from
                                           libs/pipeline/report_assets (shared with report.html)
    GET /reports/<strategy>/<version>      a model's report.html, rendered from its metadata
                                           and metrics (local disk or the object store)

Only files that exist in those two folders are served (a fixed list, read once): no path from
the URL ever reaches the filesystem. The page runs under a strict Content-Security-Policy (its
own scripts and styles only, connections to this origin only).
"""

from __future__ import annotations

import asyncio
from functools import cache
from pathlib import Path
from typing import Final

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath

from libs.events import registry
from libs.events.catalog import ModelCatalog
from libs.pipeline.report import asset_text, render_report
from services.backend.controllers.models import model_ref

STATIC_DIR: Final = Path(__file__).resolve().parent.parent / "static"
SHARED_ASSETS: Final = ("charts.js",)  # from libs/pipeline/report_assets
MEDIA_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
PAGE_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
NO_SNIFF: Final = {"X-Content-Type-Options": "nosniff"}


@cache
def _files() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, media type): the static folder plus the shared chart code."""
    found: dict[str, tuple[bytes, str]] = {}
    if STATIC_DIR.is_dir():
        for path in sorted(STATIC_DIR.iterdir()):
            media = MEDIA_TYPES.get(path.suffix)
            if path.is_file() and media is not None:
                found[path.name] = (path.read_bytes(), media)
    for name in SHARED_ASSETS:
        found[name] = (asset_text(name).encode(), MEDIA_TYPES[Path(name).suffix])
    return found


def _file(name: str) -> tuple[bytes, str]:
    try:
        return _files()[name]
    except KeyError:
        raise NotFoundException(f"no static file {name[:100]!r}") from None


class DashboardController(Controller):
    path = "/"
    include_in_schema = False

    @get("/", summary="The dashboard", sync_to_thread=False)
    def index(self) -> Response[bytes]:
        data, media = _file("index.html")
        # `trainbus up` links here with `?token=...` (the page keeps it and drops it from the
        # address bar): no Referer may carry it anywhere, not even before the script ran.
        return Response(data, media_type=media, headers={
            **NO_SNIFF, "Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache",
            "Referrer-Policy": "no-referrer",
        })

    @get("/static/{name:str}", summary="A dashboard file", sync_to_thread=False)
    def static(self, name: FromPath[str]) -> Response[bytes]:
        data, media = _file(name)
        return Response(data, media_type=media, headers={**NO_SNIFF, "Cache-Control": "no-cache"})

    @get("/reports/{strategy:str}/{version:str}", summary="A model's report page")
    async def report(
        self, strategy: FromPath[str], version: FromPath[str],
        catalog: NamedDependency[ModelCatalog],
    ) -> Response[str]:
        # The registry's detail: the same trust check as every other way to a model (403).
        detail = await registry.model_detail(catalog.bus, model_ref(strategy, version),
                                             catalog.models_dir)
        page = await asyncio.to_thread(render_report, detail.metadata, detail.metrics,
                                       version=detail.model.version)
        # The page is self-contained (inline scripts, data as JSON): allow only that.
        return Response(page, media_type=MEDIA_TYPES[".html"], headers={
            **NO_SNIFF,
            "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
                                       "style-src 'unsafe-inline'; img-src data:",
        })
