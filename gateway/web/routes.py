"""The one route table of the DICOMweb front.

The aiohttp router and Retrieve Capabilities (WADL/JSON) are both generated from
:data:`ROUTES`. Rows sharing a method and path are told apart by a value-less query flag
(``POST {uid}`` Create vs ``POST {uid}?update`` Update, PS3.18 15.5.1). An ``OPTIONS`` row
is added for the base and for every resource path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from gateway.model.status import HttpStatus, Operation
from gateway.web import capabilities, mpps, search
from gateway.web.boundary import run_route
from gateway.web.context import QueryParam, Route, Transaction
from gateway.web.negotiation import (
    DICOM_JSON,
    DICOM_XML,
    MULTIPART_JSON,
    MULTIPART_XML,
    PLAIN_JSON,
    REQUEST_TYPES,
    WADL,
)

H = HttpStatus
SPS = "modality-scheduled-procedure-steps"
MPPS = "modality-performed-procedure-steps"
MPPS_INSTANCE = f"{MPPS}/{{uid}}"
MPPS_UPDATE_PATH = f"{MPPS}/{{uid}}/update"

# Default first: application/dicom+json (Tables 14.1.3-1 / 15.1.3-1).
DATASET_TYPES = (DICOM_JSON, DICOM_XML, MULTIPART_XML, MULTIPART_JSON)
CAPABILITY_TYPES = (WADL, PLAIN_JSON)

_COMMON = (
    QueryParam("accept", "media types, as the Accept header but without wildcards"),
    QueryParam("charset", "acceptable charsets; only UTF-8 is supported"),
)
_SEARCH_PARAMS = (
    QueryParam(
        "{attribute}",
        "match on a keyword, 8-hex tag or dotted sequence path (e.g. "
        "ScheduledProcedureStepSequence.Modality=CT); UID lists, ranges, wildcards",
        repeating=True,
    ),
    QueryParam("includefield", "attributes to return in addition, or 'all'", repeating=True),
    QueryParam("fuzzymatching", "true|false; fuzzy matching is not performed (Warning)"),
    QueryParam("offset", "number of matches to skip"),
    QueryParam("limit", "maximum number of results (capped by the server's maximum)"),
    QueryParam("emptyvaluematching", "true|false; not performed (Warning)"),
    QueryParam("multiplevaluematching", "true|false; not performed (Warning)"),
    *_COMMON,
)
_RETRIEVE_PARAMS = (
    QueryParam("includefield", "attributes to return (tag, keyword, dotted path) or 'all'", True),
    *_COMMON,
)
_SERVER_FAIL = (H.INTERNAL_SERVER_ERROR, H.SERVICE_UNAVAILABLE)
_CREATE_FAIL = (
    H.BAD_REQUEST, H.CONFLICT, H.PAYLOAD_TOO_LARGE, H.UNSUPPORTED_MEDIA_TYPE, *_SERVER_FAIL
)  # fmt: skip
_UPDATE_FAIL = (
    H.BAD_REQUEST, H.NOT_FOUND, H.CONFLICT, H.GONE, H.PAYLOAD_TOO_LARGE,
    H.UNSUPPORTED_MEDIA_TYPE, *_SERVER_FAIL,
)  # fmt: skip


def _write(
    id_: str, transaction: Transaction, method: str, path: str, *,
    normative: bool, doc: str, flag: str | None = None,
) -> Route:  # fmt: skip
    """A Create/Update row: DICOM JSON/XML bodies; Accept only shapes a Status Report."""
    create = transaction is Transaction.CREATE
    return Route(
        id_, transaction, method, path, mpps.create if create else mpps.update,
        Operation.CREATE if create else Operation.UPDATE,
        normative=normative, flag=flag, params=_COMMON, request_types=REQUEST_TYPES,
        response_types=DATASET_TYPES, require_accept=False,
        success=(H.CREATED,) if create else (H.OK,),
        failures=_CREATE_FAIL if create else _UPDATE_FAIL, doc=doc,
    )  # fmt: skip


TRANSACTIONS: tuple[Route, ...] = (
    Route(
        "Search", Transaction.SEARCH, "GET", SPS, search.search, Operation.FIND,
        params=_SEARCH_PARAMS, response_types=DATASET_TYPES, success=(H.OK, H.NO_CONTENT),
        failures=(H.BAD_REQUEST, H.NOT_ACCEPTABLE, H.PAYLOAD_TOO_LARGE,
                  H.INTERNAL_SERVER_ERROR, H.SERVICE_UNAVAILABLE),
        doc="PS3.18 14.4. A trailing slash on the collection is accepted.",
    ),
    _write("Create", Transaction.CREATE, "POST", MPPS_INSTANCE, normative=True, doc="PS3.18 15.4."),
    _write("Update", Transaction.UPDATE, "POST", MPPS_INSTANCE, flag="update", normative=True,
           doc="PS3.18 15.5."),
    Route(
        "Retrieve", Transaction.RETRIEVE, "GET", MPPS_INSTANCE, mpps.retrieve, Operation.RETRIEVE,
        params=_RETRIEVE_PARAMS, response_types=DATASET_TYPES, success=(H.OK,),
        failures=(H.BAD_REQUEST, H.NOT_FOUND, H.NOT_ACCEPTABLE, H.GONE,
                  H.INTERNAL_SERVER_ERROR, H.SERVICE_UNAVAILABLE),
        doc="PS3.18 15.6. Without includefield all attributes are returned.",
    ),
    _write("Create-PUT", Transaction.CREATE, "PUT", MPPS_INSTANCE, normative=False,
           doc="Sup 246 letter-ballot drafts."),
    _write("Update-PATCH", Transaction.UPDATE, "PATCH", MPPS_INSTANCE, normative=False,
           doc="Sup 246 letter-ballot drafts."),
    _write("Update-path", Transaction.UPDATE, "POST", MPPS_UPDATE_PATH, normative=False,
           doc="Examples B.38/B.39 (a path segment instead of the ?update flag)."),
)  # fmt: skip


def _with_capabilities(rows: Sequence[Route]) -> tuple[Route, ...]:
    """Add an OPTIONS (Retrieve Capabilities) row for the base and each resource path."""
    paths = ["", *dict.fromkeys(r.path for r in rows)]
    if MPPS not in paths:
        paths.insert(paths.index(MPPS_INSTANCE), MPPS)
    options = tuple(
        Route(
            f"Capabilities-{path.replace('/', '-').replace('{', '').replace('}', '') or 'base'}",
            Transaction.CAPABILITIES, "OPTIONS", path, capabilities.capabilities, None,
            params=(), response_types=CAPABILITY_TYPES, success=(H.OK,),
            failures=(H.BAD_REQUEST, H.NOT_ACCEPTABLE),
            doc="PS3.18 8.9: this description (WADL by default, or application/json).",
        )
        for path in paths
    )  # fmt: skip
    return (*options[:1], *rows, *options[1:])


ROUTES: tuple[Route, ...] = _with_capabilities(TRANSACTIONS)
"""Every transaction, spelling and capabilities row the front serves."""

RequestHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _pick(rows: Sequence[Route], request: web.Request) -> Route:
    query = request.rel_url.query
    for row in rows:
        if row.flag is not None and row.flag in query:
            return row
    return next((row for row in rows if row.flag is None), rows[0])


def _endpoint(rows: Sequence[Route]) -> RequestHandler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await run_route(_pick(rows, request), request)

    return handle


def _url_patterns(base_path: str, path: str, all_paths: Sequence[str]) -> list[str]:
    """URL patterns for ``path``; an empty ``{uid}`` matches so that it gets a 400, not 404."""
    prefix = "" if base_path == "/" else base_path
    if not path:
        return [prefix, prefix + "/"] if prefix else ["/"]
    pattern = f"{prefix}/{path}".replace("{uid}", "{uid:[^/]*}")
    if any(other.startswith(path + "/") for other in all_paths):
        return [pattern]  # "collection/" is the instance path with an empty UID
    return [pattern, pattern + "/"]  # a trailing slash on a collection is equivalent


def register_routes(app: web.Application, routes: Sequence[Route], base_path: str) -> None:
    """Add one aiohttp route per (method, URL pattern), dispatching to the table rows."""
    groups: dict[tuple[str, str], list[Route]] = {}
    for route in routes:
        groups.setdefault((route.method, route.path), []).append(route)
    all_paths = [route.path for route in routes]
    for (method, path), rows in groups.items():
        handler = _endpoint(rows)
        for pattern in _url_patterns(base_path, path, all_paths):
            app.router.add_route(method, pattern, handler)
