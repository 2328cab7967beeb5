"""The per-request error boundary: negotiation, the handler, and a Status Report on failure.

Whatever a handler raises becomes a complete HTTP response and the server keeps serving:
gateway errors through :func:`gateway.model.status.http_status`, negotiation failures as
406/415, anything unexpected as 500. Logs carry the transaction, status, MPPS UID and
counts, never query values or bodies (they hold patient data).
"""

from __future__ import annotations

import time
import traceback
from typing import Any

from aiohttp import web

from gateway.errors import GatewayError, InternalError, PayloadTooLarge
from gateway.model.status import HttpStatus, Operation
from gateway.model.uids import is_valid_uid
from gateway.web.context import CONTEXT, Call, ClientGone, Route
from gateway.web.negotiation import Choice, NegotiationFailure, check_charset, select_media_type
from gateway.web.responses import StatusReport, report_media_type, report_response

# aiohttp >= 3.14 wants typed request keys (and warns about str keys); older ones have none.
_request_key: Any = getattr(web, "RequestKey", lambda name, _type: name)
LOGGED = _request_key("gateway.request_logged", bool)
"""Request key set once ``dicomweb request`` was logged: the access log then adds nothing
(two lines per request cost a measurable share of a queued MPPS write)."""


def _negotiate(route: Route, request: web.Request) -> Choice | None:
    """The response type for ``route``; writes fall back to None instead of failing."""
    if not route.response_types:
        return None
    query = request.rel_url.query
    try:
        check_charset(request.headers.get("Accept-Charset"), query.getall("charset", []))
        return select_media_type(
            request.headers.get("Accept"),
            query.getall("accept", []),
            route.response_types,
            require_accept=route.require_accept,
        )
    except (NegotiationFailure, GatewayError):
        if route.require_accept:
            raise
        return None  # a Create/Update is never refused over the type of a Status Report


def where(exc: BaseException) -> str:
    """``file:line in function`` of the innermost frame: loggable without any values."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"


async def run_route(route: Route, request: web.Request) -> web.StreamResponse:
    """Run one table row: negotiate, call the handler, turn any failure into a report."""
    started = time.perf_counter()
    ctx = request.app[CONTEXT]
    operation = route.operation or Operation.RETRIEVE  # capabilities: a read
    strict = ctx.settings.strict_status_codes
    choice: Choice | None = None
    fields: dict[str, object] = {}
    report: StatusReport | None = None
    try:
        # A write's only payload is a Status Report, so its type is negotiated only when
        # one is sent (most writes succeed: parsing Accept each time was pure overhead).
        choice = _negotiate(route, request) if route.require_accept else None
        call = Call(request, ctx, route, choice)
        fields = call.log_fields
        response = await route.handler(call)
    except GatewayError as error:
        report = StatusReport.from_error(error, operation, strict=strict)
    except NegotiationFailure as failure:
        report = StatusReport(failure.status, failure.message, available=failure.available)
    except web.HTTPRequestEntityTooLarge:
        too_large = PayloadTooLarge(f"request body exceeds {ctx.web.max_body_bytes} bytes")
        report = StatusReport.from_error(too_large, operation, strict=strict)
    except ClientGone:
        ctx.log.info("client disconnected", transaction=route.transaction.value, **_safe(fields))
        return web.Response(status=int(HttpStatus.NO_CONTENT))
    except Exception as exc:  # the boundary: always answer
        ctx.log.error(
            "unexpected error",
            transaction=route.transaction.value,
            error_type=type(exc).__name__,
            where=where(exc),
        )
        report = StatusReport.from_error(
            InternalError("unexpected server error"), operation, strict=strict
        )
    if report is not None:
        if choice is None and not route.require_accept:
            choice = _negotiate(route, request)
        media = report_media_type(request.headers.get("Accept"), choice)
        response = report_response(report, media)
    try:
        await _send(response, request)
    finally:
        _log(ctx.log, route, request, response.status, fields, time.perf_counter() - started)
    return response


async def _send(response: web.StreamResponse, request: web.Request) -> None:
    """Write ``response`` now, so the client does not wait for the request's log line.

    aiohttp would send it after this handler returned; its own prepare and write_eof are
    then no-ops. A client that left mid-write is left to aiohttp, which meets the closed
    connection again and handles it as it always did.
    """
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        pass


def _safe(fields: dict[str, object]) -> dict[str, object]:
    """Only counts and valid UIDs reach the log."""
    out: dict[str, object] = {}
    for key, value in fields.items():
        valid_uid = key == "uid" and isinstance(value, str) and is_valid_uid(value)
        if valid_uid or isinstance(value, int):
            out[key] = value
    return out


def _log(
    log: Any,
    route: Route,
    request: web.Request,
    status: int,
    fields: dict[str, object],
    seconds: float,
) -> None:
    """The one log line of a routed request (the access log skips it, see ``LOGGED``)."""
    request[LOGGED] = True
    log.info(
        "dicomweb request",
        transaction=route.transaction.value,
        form=route.id,
        method=request.method,
        status=status,
        seconds=round(seconds, 6),
        remote=request.remote,
        **_safe(fields),
    )
