"""Shared types of the DICOMweb front: the route row, the per-request call, the app context.

Kept apart from :mod:`gateway.web.routes` so handlers and the capabilities generator can
use the types without importing the table that imports them.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.backends.base import Backend
from gateway.model.status import HttpStatus, Operation
from gateway.settings import Settings, WebSettings
from gateway.web.negotiation import Choice


class Transaction(enum.Enum):
    """The PS3.18 transactions the front serves (the WADL method ids derive from these)."""

    SEARCH = "Search"
    CREATE = "Create"
    UPDATE = "Update"
    RETRIEVE = "Retrieve"
    CAPABILITIES = "RetrieveCapabilities"


@dataclass(frozen=True)
class QueryParam:
    """A query parameter a transaction understands (listed in Retrieve Capabilities)."""

    name: str
    doc: str
    repeating: bool = False


class ClientGone(Exception):
    """The client closed the connection before we answered; nobody reads the response."""


Handler = Callable[["Call"], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """One row of the route table: a method on a path (relative to the base) + its contract.

    ``flag`` names a value-less query parameter that selects this row over a row with the
    same method and path (``POST {uid}?update``). ``require_accept`` is false for writes,
    whose only possible payload is a Status Report: they never fail content negotiation.
    """

    id: str  # unique; the WADL method id
    transaction: Transaction
    method: str
    path: str
    handler: Handler
    operation: Operation | None
    normative: bool = True
    flag: str | None = None
    params: tuple[QueryParam, ...] = ()
    request_types: tuple[str, ...] = ()
    response_types: tuple[str, ...] = ()
    success: tuple[HttpStatus, ...] = (HttpStatus.OK,)
    failures: tuple[HttpStatus, ...] = ()
    require_accept: bool = True
    doc: str = ""

    @property
    def spelling(self) -> str:
        """How the request looks, e.g. ``POST modality-performed-procedure-steps/{uid}?update``."""
        return f"{self.method} {self.path or '/'}" + (f"?{self.flag}" if self.flag else "")


@dataclass(frozen=True)
class WebContext:
    """What every handler may use; stored once in the application."""

    settings: Settings
    backend: Backend
    routes: tuple[Route, ...]
    log: Any

    @property
    def web(self) -> WebSettings:
        return self.settings.web


CONTEXT = web.AppKey("gateway.web.context", WebContext)


def service_uri(request: web.Request, settings: WebSettings) -> str:
    """Our base URI for Warning headers and Location (``public_url`` when behind a proxy)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    base = "" if settings.base_path == "/" else settings.base_path
    return f"{request.scheme}://{request.host}{base}"


@dataclass(frozen=True)
class Call:
    """One routed request: the request, its route, the negotiated response type."""

    request: web.Request
    ctx: WebContext
    route: Route
    choice: Choice | None
    log_fields: dict[str, object] = field(default_factory=dict)

    @property
    def service(self) -> str:
        return service_uri(self.request, self.ctx.web)

    def query_values(self, name: str) -> list[str]:
        """All values of query parameter ``name`` in request order."""
        return list(self.request.rel_url.query.getall(name, []))
