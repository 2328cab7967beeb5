"""Liveness and readiness probes, outside the DICOMweb base path.

``/health`` says the process serves HTTP; ``/ready`` says the backend can serve now
(:meth:`gateway.backends.base.Backend.check_ready`). A failed readiness check is always
503, whatever the cause: probes only distinguish "send traffic" from "do not".
"""

from __future__ import annotations

import json

from aiohttp import web

from gateway.errors import GatewayError
from gateway.model.status import HttpStatus
from gateway.web.boundary import where
from gateway.web.context import CONTEXT

HEALTH_PATH = "/health"
READY_PATH = "/ready"


def _json(status: HttpStatus, body: dict[str, object]) -> web.Response:
    response = web.Response(status=int(status), body=json.dumps(body).encode("utf-8"))
    response.headers["Content-Type"] = "application/json; charset=utf-8"
    response.headers["Cache-Control"] = "no-store"
    return response


async def health(request: web.Request) -> web.StreamResponse:
    """Liveness: 200 as long as the event loop answers."""
    return _json(HttpStatus.OK, {"status": "ok"})


async def ready(request: web.Request) -> web.StreamResponse:
    """Readiness: 200 when the backend reports ready, else 503 with the error kind."""
    ctx = request.app[CONTEXT]
    try:
        await ctx.backend.check_ready()
    except GatewayError as error:
        ctx.log.warning("backend not ready", backend=ctx.backend.name, kind=error.kind.value)
        return _json(
            HttpStatus.SERVICE_UNAVAILABLE, {"status": "unavailable", "reason": error.kind.value}
        )
    except Exception as exc:  # a probe must answer
        ctx.log.error("readiness check failed", error_type=type(exc).__name__, where=where(exc))
        return _json(
            HttpStatus.SERVICE_UNAVAILABLE, {"status": "unavailable", "reason": "internal"}
        )
    body: dict[str, object] = {"status": "ready", "backend": ctx.backend.name}
    body.update(await _extra_health(ctx.backend))
    return _json(HttpStatus.OK, body)


async def _extra_health(backend: object) -> dict[str, object]:
    """Facts of a backend's optional ``health()`` (e.g. the outbox depth); never fails."""
    extra = getattr(backend, "health", None)
    if extra is None:
        return {}
    try:
        facts: dict[str, object] = await extra()
    except GatewayError:
        return {}
    return facts


def register_health(app: web.Application) -> None:
    """``GET /health`` and ``GET /ready``."""
    app.router.add_get(HEALTH_PATH, health, allow_head=False)
    app.router.add_get(READY_PATH, ready, allow_head=False)
