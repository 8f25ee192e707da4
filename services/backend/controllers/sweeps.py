"""`/api/v1/sweeps`: the sweeps on the log and each one's leaderboard (read-only: a sweep is
started, resumed and cancelled by its coordinator, `trainbus sweep`; docs/sweeps.md).

The leaderboard is folded from the sweep's events on every request and joined with its trials'
jobs as the projection has them, so the dashboard polling it sees live progress.
"""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from libs.events.catalog import ModelCatalog
from libs.events.sweep_service import SweepService, SweepSummary, SweepView


class SweepController(Controller):
    path = "/api/v1/sweeps"
    tags = ("sweeps",)

    @get("/", summary="Every sweep, newest first: status, objective, progress, best value")
    async def list_sweeps(self, catalog: NamedDependency[ModelCatalog]) -> list[SweepSummary]:
        assert catalog.bus is not None
        return await SweepService(catalog.bus, models_dir=catalog.models_dir).list()

    @get(
        "/{sweep_id:str}",
        summary="One sweep's leaderboard",
        description=(
            "Trials ranked by the objective (the mean over their seeds, ± the standard "
            "deviation), then the running, pruned and failed ones; each with its parameters, "
            "its jobs (status, epoch), its mean test metrics, the backtest numbers among them "
            "and its best seed's model. `importance`: each parameter's importance (Optuna's "
            "fANOVA) once two trials completed with different values, else null."
        ),
    )
    async def get_sweep(self, sweep_id: FromPath[str],
                        catalog: NamedDependency[ModelCatalog]) -> SweepView:
        assert catalog.bus is not None
        return await SweepService(catalog.bus, models_dir=catalog.models_dir).get(sweep_id)
