"""The console's overview numbers: GET /v1/overview."""

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from siyu.analytics.overview import overview
from siyu.api.deps import AdminKey, RuntimeDep
from siyu.profiles.service import stats

router = APIRouter()


@router.get("/v1/overview", tags=["analytics"])
async def get_overview(
    _key: AdminKey,
    runtime: RuntimeDep,
    months: int = Query(12, ge=1, le=36, description="Calendar months to return (brand time zone)."),
    churn_days: int = Query(90, ge=1, le=3650, description="Days without activity after which a person is lost."),
) -> dict[str, Any]:
    """Counts, monthly inflow / outflow / stock, orders and GMV (fen), and channels (see docs/metrics)."""

    def work() -> dict[str, Any]:
        con = runtime.events.cursor()
        try:
            data = overview(
                con,
                time_zone=runtime.settings.timezone,
                now=datetime.now(UTC),
                churn_days=churn_days,
                months=months,
            ).as_dict()
        finally:
            con.close()
        return {"persons": stats(runtime.engine, runtime.events)["persons"], **data}

    return await run_in_threadpool(work)
