"""`/api/v1/models`: trained models (local storage and the object store), their archives, the
leaderboard and the comparison, and the registry's aliases.

A model in a path is `/{strategy}/{version}`: `version` is `<tf>_v<N>`, the id of the job that
trained it, `latest`, or `@<alias>` (`/models/eurusd/@champion`). Writes (PUT, DELETE) need the
API's bearer token like every other write. The registry's refusals map to problem details in
services/backend/problems.py: 404 unknown model or alias, 409 a model that is kept (aliased,
or a job's model), 422 a bad alias name or sort key, 403 a model no trusted key vouches for.

Trust (libs/events/trust.py): when the operator trusts at least one trainer key, the listing
leaves out the models whose job no trusted key signed, and showing, promoting or downloading
one is 403 "model untrusted", the detail naming why (unsigned claim, or the key that signed
it). Deleting is not refused (a forgery must be removable).
"""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, Response, delete, get, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK

from libs.events import registry
from libs.events.catalog import Comparison, ModelCatalog, ModelDetail, ModelInfo
from libs.events.errors import InvalidRequest
from libs.events.registry import AliasRecord, AliasRequest, Deletion


def model_ref(strategy: str, version: str) -> str:
    """The registry's reference of `/{strategy}/{version}` (`@<alias>` names an alias)."""
    return f"{strategy}@{version[1:]}" if version.startswith("@") else f"{strategy}/{version}"


class ModelController(Controller):
    path = "/api/v1/models"
    tags = ("models",)

    @get(
        "/",
        summary="List trained models, newest first or by a headline metric",
        description=(
            "`sort`: a headline metric (`macro_f1`, `accuracy`, `weighted_f1`, "
            "`backtest_sharpe`, `backtest_net_return`, `backtest_max_drawdown`, ..., "
            "`baseline_<name>_<metric>`, `lift_<metric>_vs_<name>`, `created_at`); models "
            "without it come last. Each model lists the aliases pointing at it. With trust "
            "configured, only models whose job a trusted key signed."
        ),
    )
    async def list_models(
        self,
        catalog: NamedDependency[ModelCatalog],
        strategy: FromQuery[str | None] = None,
        sort: FromQuery[str | None] = None,
        order: FromQuery[Literal["desc", "asc"]] = "desc",
    ) -> list[ModelInfo]:
        return await registry.list_models(catalog.bus, catalog.models_dir, strategy=strategy,
                                          sort=sort, order=order)

    @get(
        "/compare",
        summary="Models side by side (the rows `trainbus models compare` prints)",
        description=(
            "`models`: two to twelve references, comma-separated (`a/1h_v1,b@champion`). Each "
            "row has one value per model and `best`, the indices of the best values (higher "
            "is better, except RMSE, MAE and the magnitude of the max drawdown)."
        ),
    )
    async def compare(
        self,
        catalog: NamedDependency[ModelCatalog],
        models: Annotated[str, QueryParameter(min_length=1, max_length=2000)],
    ) -> Comparison:
        refs = [ref.strip() for ref in models.split(",") if ref.strip()]
        return await registry.compare(catalog.bus, refs, catalog.models_dir)

    @get("/{strategy:str}/aliases", summary="A strategy's aliases")
    async def list_aliases(
        self, strategy: FromPath[str], catalog: NamedDependency[ModelCatalog]
    ) -> list[AliasRecord]:
        assert catalog.bus is not None
        return await registry.list_aliases(catalog.bus, strategy)

    @put(
        "/{strategy:str}/aliases/{alias:str}",
        status_code=HTTP_200_OK,
        summary="Point an alias at a version (recorded on the log)",
        description=(
            "404 when the version exists neither on disk nor in the object store, 422 for an "
            "alias name that is not 1-32 of [a-z0-9_-] starting with a letter, or `latest`."
        ),
    )
    async def set_alias(
        self, strategy: FromPath[str], alias: FromPath[str], data: JSONBody[AliasRequest],
        catalog: NamedDependency[ModelCatalog],
    ) -> AliasRecord:
        assert catalog.bus is not None
        return await registry.set_alias(
            catalog.bus, strategy, alias, data.version, by=data.requested_by,
            expires_after=data.expires_after, reason=data.reason, models_dir=catalog.models_dir,
        )

    @delete(
        "/{strategy:str}/aliases/{alias:str}",
        status_code=HTTP_200_OK,
        summary="Remove an alias (recorded on the log); returns where it pointed",
    )
    async def remove_alias(
        self, strategy: FromPath[str], alias: FromPath[str],
        catalog: NamedDependency[ModelCatalog],
        reason: Annotated[str | None, QueryParameter(max_length=4096)] = None,
    ) -> AliasRecord:
        assert catalog.bus is not None
        return await registry.remove_alias(catalog.bus, strategy, alias, by="api",
                                           reason=reason)

    @get(
        "/{strategy:str}/{version:str}",
        summary="One model: metadata, metrics and aliases",
        description="`version` is `<timeframe>_v<N>`, the id of the job that trained it, "
                    "`latest` or `@<alias>`.",
    )
    async def get_model(
        self, strategy: FromPath[str], version: FromPath[str],
        catalog: NamedDependency[ModelCatalog],
    ) -> ModelDetail:
        return await registry.model_detail(catalog.bus, model_ref(strategy, version),
                                           catalog.models_dir)

    @delete(
        "/{strategy:str}/{version:str}",
        status_code=HTTP_200_OK,
        summary="Delete a model: its local directory and its object-store copy",
        description=(
            "409 when an alias points at it (demote it first) or a job names it as its model. "
            "`dry_run`: only say what would go."
        ),
    )
    async def delete_model(
        self, strategy: FromPath[str], version: FromPath[str],
        catalog: NamedDependency[ModelCatalog], dry_run: FromQuery[bool] = False,
    ) -> Deletion:
        if version.startswith("@"):
            raise InvalidRequest("delete a model by its version, not through an alias",
                                 field="version")
        return await registry.delete_model(catalog.bus, model_ref(strategy, version),
                                           catalog.models_dir, dry_run=dry_run)

    @get(
        "/{strategy:str}/{version:str}/download",
        summary="The model archive (.tar.gz), from local storage or the object store",
        description="`version` is `<timeframe>_v<N>`, the id of the job that trained it, "
                    "`latest` or `@<alias>` (an expired alias is refused, 409; a model no "
                    "trusted key vouches for while trust is configured, 403).",
        media_type="application/gzip",
    )
    async def download(
        self, strategy: FromPath[str], version: FromPath[str],
        catalog: NamedDependency[ModelCatalog],
    ) -> Response[bytes]:
        resolved = await registry.resolve_ref(catalog.bus, model_ref(strategy, version),
                                              catalog.models_dir)
        # By job id when there is one: another machine may have made the same `<tf>_v<N>`.
        archive = await catalog.archive(resolved.strategy,
                                        resolved.model.job_id or resolved.version)
        return Response(
            archive.data,
            media_type="application/gzip",
            headers={
                "Content-Disposition": f'attachment; filename="{archive.filename}"',
                "X-Trainbus-Source": archive.source,
            },
        )
