"""Building and running the DICOMweb front (the composition root calls these).

:func:`create_web_app` wires the route table to a backend; :func:`make_runner` wraps the
application in an aiohttp ``AppRunner`` with the settings every deployment needs: an access
log without query strings (they carry patient data) and handler cancellation on client
disconnect (a search stops working for a client that left).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from gateway.backends.base import Backend
from gateway.logging import get_logger
from gateway.model.status import HttpStatus
from gateway.settings import Settings
from gateway.web.boundary import LOGGED, where
from gateway.web.context import CONTEXT, WebContext
from gateway.web.health import register_health
from gateway.web.responses import StatusReport, report_media_type, report_response
from gateway.web.routes import ROUTES, register_routes

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _outer_boundary(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Status Reports for what the router rejects (404, 405 + Allow) and a last-resort 500.

    Table rows have their own boundary (:func:`gateway.web.boundary.run_route`).
    """
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        try:
            status = HttpStatus(exc.status)
        except ValueError:
            raise exc from None
        allow: tuple[str, ...] = ()
        if isinstance(exc, web.HTTPMethodNotAllowed):
            allow = tuple(sorted(exc.allowed_methods))
            detail = f"{request.method} is not allowed on this resource"
        elif status is HttpStatus.NOT_FOUND:
            detail = "no such resource"
        else:
            detail = exc.reason
        report = StatusReport(status, detail, allow=allow)
    except Exception as exc:  # never drop a request without an answer
        request.app[CONTEXT].log.error(
            "unexpected error", error_type=type(exc).__name__, where=where(exc)
        )
        report = StatusReport(HttpStatus.INTERNAL_SERVER_ERROR, "unexpected server error")
    return report_response(report, report_media_type(request.headers.get("Accept"), None))


def create_web_app(settings: Settings, backend: Backend) -> web.Application:
    """The DICOMweb front for ``backend`` under ``settings.web.base_path``, plus probes.

    Reads ``settings.web`` (base_path, max_body_bytes, max_search_limit, public_url) and
    ``settings.strict_status_codes``. Does not own ``backend``: the caller closes it.
    """
    app = web.Application(
        client_max_size=settings.web.max_body_bytes, middlewares=[_outer_boundary]
    )
    app[CONTEXT] = WebContext(settings, backend, ROUTES, get_logger("web"))
    register_health(app)
    register_routes(app, ROUTES, settings.web.base_path)
    return app


class SafeAccessLogger(AbstractAccessLogger):
    """Access log through structlog: method, path without query, status, size, time.

    Requests of the route table have logged their own ``dicomweb request`` line (with
    status, time and peer); only the others (probes, 404, 405) get an ``http`` line.
    """

    def __init__(self, logger: Any, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._log = get_logger("web.access")

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time_: float) -> None:
        if request.get(LOGGED):
            return
        self._log.info(
            "http",
            method=request.method,
            path=request.rel_url.path,
            status=response.status,
            bytes=response.body_length,
            seconds=round(time_, 6),
            remote=request.remote,
        )


def make_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """An ``AppRunner`` with the PHI-safe access log and handler cancellation enabled."""
    kwargs.setdefault("access_log_class", SafeAccessLogger)
    kwargs.setdefault("handler_cancellation", True)
    return web.AppRunner(app, **kwargs)


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving ``app`` on ``host:port`` (0 = any free port); return runner and port."""
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)
