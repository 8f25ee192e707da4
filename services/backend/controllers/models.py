"""`/api/v1/models`: trained models (local storage and the object store) and their archives."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery

from libs.events.catalog import ModelCatalog, ModelDetail, ModelInfo


class ModelController(Controller):
    path = "/api/v1/models"
    tags = ("models",)

    @get("/", summary="List trained models, newest first")
    async def list_models(
        self, catalog: NamedDependency[ModelCatalog], strategy: FromQuery[str | None] = None
    ) -> list[ModelInfo]:
        return await catalog.models(strategy=strategy)

    @get(
        "/{strategy:str}/{version:str}",
        summary="One model: metadata and metrics",
        description="`version` is `<timeframe>_v<N>`, or the id of the job that trained it.",
    )
    async def get_model(
        self, strategy: FromPath[str], version: FromPath[str],
        catalog: NamedDependency[ModelCatalog],
    ) -> ModelDetail:
        return await catalog.get(strategy, version)

    @get(
        "/{strategy:str}/{version:str}/download",
        summary="The model archive (.tar.gz), from local storage or the object store",
        media_type="application/gzip",
    )
    async def download(
        self, strategy: FromPath[str], version: FromPath[str],
        catalog: NamedDependency[ModelCatalog],
    ) -> Response[bytes]:
        archive = await catalog.archive(strategy, version)
        return Response(
            archive.data,
            media_type="application/gzip",
            headers={
                "Content-Disposition": f'attachment; filename="{archive.filename}"',
                "X-Trainbus-Source": archive.source,
            },
        )
