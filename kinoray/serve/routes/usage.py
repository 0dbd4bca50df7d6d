"""``GET /video/v1/delivery-usage``: seconds of media the delivery edge sent, per asset and resolution tier
(:mod:`kinoray.control.usage`, which documents what counts, the hourly granularity and the flush lag)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from kinoray.control import usage
from kinoray.control.usage import DeliveryUsageList
from kinoray.serve.deps import CurrentToken, PlatformDep, RankedPageDep
from kinoray.serve.schemas import AUTHENTICATED, error_responses

__all__ = ["router"]

router = APIRouter(prefix="/video/v1/delivery-usage", tags=["delivery usage"])


@router.get("", response_model=DeliveryUsageList, response_model_exclude_none=True,
            responses=error_responses(*AUTHENTICATED))
def list_usage(platform: PlatformDep, token: CurrentToken, pages: RankedPageDep,
               timeframe: Annotated[list[int] | None, Query(
                   alias="timeframe[]", description="[start, end] in unix seconds; default: the last hour")] = None,
               asset_id: Annotated[str | None, Query(max_length=64)] = None,
               live_stream_id: Annotated[str | None, Query(max_length=64)] = None) -> DeliveryUsageList:
    """Delivered seconds per asset over the UTC hours overlapping ``timeframe``, most delivered first; assets
    with no delivered seconds are left out."""
    with platform.db.reader() as session:
        return usage.delivery_report(session, timeframe=timeframe, asset_id=asset_id, live_stream_id=live_stream_id,
                                     page=pages.page, limit=pages.limit)
