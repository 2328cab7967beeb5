"""Search for Modality Scheduled Procedure Steps (PS3.18 14.4).

The backend yields every match in a stable order; paging is done here (8.3.4.4): skip
``offset``, keep ``limit`` (capped by ``[web] max_search_limit``), count the rest for the
``remaining`` Warning. The generator is closed with ``aclose()`` on every exit (limit
reached, client gone, error, cancellation) so a backend can stop its work.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence

from aiohttp import web

from gateway.model.mwl_keys import DICOMWEB_REQUIRED_RETURN_KEYS
from gateway.model.query import WorklistQuery
from gateway.model.status import HttpStatus
from gateway.model.types import JsonDataset
from gateway.web.context import Call, ClientGone
from gateway.web.negotiation import DICOM_JSON, Choice
from gateway.web.responses import (
    EMPTY_VALUE_NOT_SUPPORTED,
    FUZZY_NOT_SUPPORTED,
    MULTIPLE_VALUE_NOT_SUPPORTED,
    add_warnings,
    dataset_response,
    remaining_text,
)

# Parameters the front handles itself and does not pass to the query model.
FRONT_PARAMS = frozenset({"accept", "charset"})
_UNSUPPORTED_FEATURES = (
    ("emptyvaluematching", EMPTY_VALUE_NOT_SUPPORTED),
    ("multiplevaluematching", MULTIPLE_VALUE_NOT_SUPPORTED),
)


def _feature_warnings(call: Call, query: WorklistQuery) -> list[str]:
    """Warnings for matching features asked for but not performed (8.3.4.2/5/6).

    The query model has already refused invalid values of these parameters.
    """
    texts = [FUZZY_NOT_SUPPORTED] if query.fuzzy else []
    texts += [text for name, text in _UNSUPPORTED_FEATURES if call.query_values(name) == ["true"]]
    return texts


async def collect_page(
    results: AsyncIterator[JsonDataset],
    offset: int,
    limit: int,
    request: web.Request,
    *,
    count_all: bool = True,
) -> tuple[list[JsonDataset], int | None]:
    """Skip ``offset`` matches, keep ``limit``, count the rest; always close ``results``.

    With ``count_all`` false the search stops at the first match past the page, and the
    remaining count is ``None`` (unknown but non-zero) when there is one.
    """
    page: list[JsonDataset] = []
    seen = 0
    try:
        async for item in results:
            transport = request.transport
            if transport is None or transport.is_closing():
                raise ClientGone
            if offset <= seen < offset + limit:
                page.append(item)
            seen += 1
            if not count_all and seen > offset + limit:
                break
    finally:
        aclose = getattr(results, "aclose", None)
        if aclose is not None:
            await aclose()
    remaining = max(0, seen - offset - len(page))
    if not count_all and remaining:
        return page, None
    return page, remaining


@functools.lru_cache(maxsize=256)
def _parsed_query(params: tuple[tuple[str, str], ...], max_limit: int) -> WorklistQuery:
    """The query of these parameters, one object per distinct query string.

    Modalities ask the same few queries again and again; an immutable query object keeps
    its compiled matcher, projection plan and return keys, which are a third of a small
    Search's time when built anew.
    """
    return WorklistQuery.from_query_params(params, max_limit=max_limit)


async def search(call: Call) -> web.StreamResponse:
    """``GET {base}/modality-scheduled-procedure-steps?...``: 200 with results or 204."""
    web_settings = call.ctx.web
    params = [(k, v) for k, v in call.request.rel_url.query.items() if k not in FRONT_PARAMS]
    query = _parsed_query(tuple(params), web_settings.max_search_limit)
    warnings = _feature_warnings(call, query)
    # Every Type 1/2 key of Table K.6-1 is returned, even with includefield=all (14.4.2).
    fetch = query.with_return_keys(DICOMWEB_REQUIRED_RETURN_KEYS)
    limit = web_settings.max_search_limit
    if query.limit is not None:
        limit = min(query.limit, limit)
    backend = call.ctx.backend
    page, remaining = await collect_page(
        backend.search_worklist(fetch),
        query.offset,
        limit,
        call.request,
        count_all=backend.cheap_remaining_count,
    )
    results: Sequence[JsonDataset] = [fetch.project(item) for item in page]
    call.log_fields.update(results=len(results), remaining=remaining)
    if remaining is None or remaining > 0:
        warnings.append(remaining_text(remaining))
    if not results:
        response = web.Response(status=int(HttpStatus.NO_CONTENT))
    else:
        response = dataset_response(results, call.choice or Choice(DICOM_JSON))
    add_warnings(response, call.service, warnings)
    return response
