"""A configurable fake DICOMweb origin server (PS3.18 ch. 14/15) for fault tests.

A real aiohttp server on a loopback port 0. It serves Search with offset/limit paging and
the "additional results" Warning, and MPPS Create/Update/Retrieve in the standard dialect
(POST, POST ``?update``) or the draft dialect (PUT, PATCH). Faults are queued per route:
any status with a Status Report, a hang (slow past any timeout), malformed JSON, a wrong
Content-Type, or a Search page that stalls after some results until the client leaves.
It records every request. Matching is not implemented: tests check the parameters sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from anyio.from_thread import BlockingPortal, start_blocking_portal

from gateway.backends.base import Backend
from gateway.backends.dicomweb import DicomwebBackend
from gateway.settings import DicomwebBackendSettings, settings_from_mapping

Route = Literal["search", "create", "update", "retrieve", "*"]
Dialect = Literal["standard", "draft"]

DICOM_JSON = "application/dicom+json"
PPS_STATUS = "00400252"


@dataclass
class Fault:
    """One scripted answer instead of the normal one."""

    status: int = 503
    body: bytes = b"the origin is unavailable"
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer: the client's timeout must end it
    times: int = 1  # how many matching requests it answers (then it is used up)


def malformed_json() -> Fault:
    """A 200 whose JSON body stops in the middle."""
    return Fault(status=200, body=b'[{"00100010": {"vr": "PN", "Val', content_type=DICOM_JSON)


def wrong_content_type() -> Fault:
    """A 200 with an HTML body, as a misrouted proxy or login page would send."""
    return Fault(status=200, body=b"<html><body>Sign in</body></html>", content_type="text/html")


def status_report(status: int, text: str, **extra: str) -> Fault:
    """A failure with a plain-text Status Report (PS3.18 8.6.3)."""
    return Fault(status=status, body=text.encode(), headers=dict(extra))


@dataclass
class Recorded:
    """One request the origin received."""

    method: str
    path: str
    query: list[tuple[str, str]]
    query_string: str
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int] | None = None  # the client's address: same for a pooled connection


class FakeOrigin:
    """The fake origin; ``await start()`` returns its base URL, ``await close()`` stops it."""

    def __init__(
        self,
        *,
        dialect: Dialect = "standard",
        base_path: str = "/dicomweb",
        warn_remaining: bool = True,
        max_limit: int | None = None,
        ignore_paging: bool = False,
        create_status: int = 201,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.dialect = dialect
        self.base_path = base_path
        self.warn_remaining = warn_remaining
        self.max_limit = max_limit
        self.ignore_paging = ignore_paging
        self.create_status = create_status
        self.ssl_context = ssl_context
        self.worklist: list[dict[str, Any]] = []
        self.mpps: dict[str, dict[str, Any]] = {}
        self.gone: set[str] = set()
        self.requests: list[Recorded] = []
        self.faults: dict[str, list[Fault]] = {}
        self.stall_after: int | None = None  # Search: send this many results, then stall
        self.received = asyncio.Event()  # set by every request (cleared by tests)
        self.stalled = asyncio.Event()  # the stalled page has sent its first results
        self.aborted = asyncio.Event()  # a client closed a stalled or hanging request
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- control ------------------------------------------------------------------------

    def fail(self, route: Route, fault: Fault) -> None:
        """Answer the next ``fault.times`` requests of ``route`` with ``fault``."""
        self.faults.setdefault(route, []).append(fault)

    def requests_to(self, route: Route) -> list[Recorded]:
        """The recorded requests that went to ``route``."""
        return [r for r in self.requests if _route_of(r, self.dialect) == route]

    async def start(self) -> str:
        app = web.Application()
        base = self.base_path.rstrip("/")
        app.router.add_get(f"{base}/modality-scheduled-procedure-steps", self._search)
        app.router.add_route("*", f"{base}/modality-performed-procedure-steps/{{uid}}", self._mpps)
        self._runner = web.AppRunner(
            app, handle_signals=False, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        port = self._runner.addresses[0][1]
        scheme = "https" if self.ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{port}{base}"
        return self.url

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- handlers -----------------------------------------------------------------------

    async def _record(self, request: web.Request) -> Recorded:
        record = Recorded(
            method=request.method,
            path=request.path,
            query=list(request.query.items()),
            query_string=request.rel_url.raw_query_string,
            headers=dict(request.headers),
            body=await request.read(),
            peer=request.transport.get_extra_info("peername") if request.transport else None,
        )
        self.requests.append(record)
        self.received.set()
        return record

    async def _fault(self, route: Route) -> web.StreamResponse | None:
        for key in (route, "*"):
            queue = self.faults.get(key)
            if not queue:
                continue
            fault = queue[0]
            fault.times -= 1
            if fault.times <= 0:
                queue.pop(0)
            if fault.hang:
                await self._wait_for_client_to_leave()
            response = web.Response(status=fault.status, body=fault.body, headers=fault.headers)
            response.content_type = fault.content_type
            return response
        return None

    async def _wait_for_client_to_leave(self) -> None:
        try:
            await self._closing.wait()
        except asyncio.CancelledError:
            self.aborted.set()
            raise

    async def _search(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        if (fault := await self._fault("search")) is not None:
            return fault
        offset = int(request.query.get("offset", "0"))
        limit = int(request.query.get("limit", str(len(self.worklist) or 1)))
        if self.max_limit is not None:
            limit = min(limit, self.max_limit)
        if self.ignore_paging:
            offset, limit = 0, len(self.worklist)
        page = self.worklist[offset : offset + limit]
        remaining = max(0, len(self.worklist) - offset - len(page))
        if not page:
            return web.Response(status=204)
        headers = {}
        if remaining and self.warn_remaining:
            text = f"There are {remaining} additional results that can be requested"
            headers["Warning"] = f"299 {self.url}: {text}"
        if self.stall_after is not None:
            return await self._stalled_page(request, page, headers)
        return web.Response(
            body=json.dumps(page).encode(), content_type=DICOM_JSON, headers=headers
        )

    async def _stalled_page(
        self, request: web.Request, page: list[dict[str, Any]], headers: dict[str, str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={**headers, "Content-Type": DICOM_JSON})
        await response.prepare(request)
        first = page[: self.stall_after]
        await response.write(("[" + ",".join(json.dumps(i) for i in first) + ",").encode())
        self.stalled.set()
        await self._wait_for_client_to_leave()
        return response  # pragma: no cover - only reached when the origin closes

    async def _mpps(self, request: web.Request) -> web.StreamResponse:
        record = await self._record(request)
        route = _route_of(record, self.dialect)
        if route is None:
            allow = "POST, GET" if self.dialect == "standard" else "PUT, PATCH, GET"
            return web.Response(status=405, text="method not allowed", headers={"Allow": allow})
        if (fault := await self._fault(route)) is not None:
            return fault
        uid = request.match_info["uid"]
        handler: Callable[[str, bytes, web.Request], web.Response] = {
            "create": self._create,
            "update": self._update,
            "retrieve": self._retrieve,
        }[route]
        return handler(uid, record.body, request)

    def _create(self, uid: str, body: bytes, request: web.Request) -> web.Response:
        if uid in self.mpps:
            return web.Response(status=409, text=f"MPPS {uid} already exists")
        self.mpps[uid] = _one_dataset(body)
        return web.Response(status=self.create_status)

    def _update(self, uid: str, body: bytes, request: web.Request) -> web.Response:
        if uid in self.gone:
            return web.Response(status=410, text="MPPS was deleted")
        stored = self.mpps.get(uid)
        if stored is None:
            return web.Response(status=404, text="no such MPPS")
        status = stored.get(PPS_STATUS, {}).get("Value", [""])[0]
        if status in ("COMPLETED", "DISCONTINUED"):
            return web.Response(status=409, text="conflict")  # no reason given on purpose
        stored.update(_one_dataset(body))
        return web.Response(status=200)

    def _retrieve(self, uid: str, body: bytes, request: web.Request) -> web.Response:
        if uid in self.gone:
            return web.Response(status=410, text="MPPS was deleted")
        stored = self.mpps.get(uid)
        if stored is None:
            return web.Response(status=404, text="no such MPPS")
        wanted = {t for v in request.query.getall("includefield", []) for t in v.split(",")}
        result = {k: v for k, v in stored.items() if not wanted or k in wanted}
        return web.Response(body=json.dumps([result]).encode(), content_type=DICOM_JSON)


def _route_of(record: Recorded, dialect: Dialect) -> Route | None:
    if record.path.endswith("/modality-scheduled-procedure-steps"):
        return "search"
    if record.method == "GET":
        return "retrieve"
    if dialect == "standard" and record.method == "POST":
        return "update" if "update" in dict(record.query) else "create"
    if dialect == "draft":
        return {"PUT": "create", "PATCH": "update"}.get(record.method)  # type: ignore[return-value]
    return None


def _one_dataset(body: bytes) -> dict[str, Any]:
    parsed = json.loads(body)
    if isinstance(parsed, list):
        parsed = parsed[0]
    assert isinstance(parsed, dict)
    return parsed


@contextlib.contextmanager
def origin_in_thread(**options: Any) -> Iterator[tuple[FakeOrigin, BlockingPortal]]:
    """A started :class:`FakeOrigin` on its own event loop thread, for synchronous tests.

    Change its state through ``portal.call`` (it runs in the origin's loop); wait for its
    events with :func:`wait_event`.
    """
    with start_blocking_portal() as portal:
        origin = portal.call(_started, options)
        try:
            yield origin, portal
        finally:
            portal.call(origin.close)


async def _started(options: dict[str, Any]) -> FakeOrigin:
    origin = FakeOrigin(**options)
    await origin.start()
    return origin


def wait_event(portal: BlockingPortal, event: asyncio.Event, timeout: float = 10.0) -> None:
    """Block until ``event`` is set in the origin's loop; AssertionError after ``timeout``."""

    async def waiter() -> None:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            raise AssertionError("the origin never saw the expected event") from None

    portal.call(waiter)


@contextlib.asynccontextmanager
async def dicomweb_over(backend: Backend, **options: Any) -> AsyncIterator[DicomwebBackend]:
    """A real ``dicomweb`` backend whose origin is our own DICOMweb front over ``backend``.

    The front (:func:`gateway.web.create_web_app`) runs on loopback port 0; ``options`` are
    extra :class:`DicomwebBackendSettings` keys (``page_size``, ``mpps_dialect``...). Used
    to run the backend contract suite through the relay: dicomweb -> web front -> backend.
    """
    from gateway.web import create_web_app

    settings = settings_from_mapping({"web": {"host": "127.0.0.1", "port": 0}})
    runner = web.AppRunner(create_web_app(settings, backend), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}{settings.web.base_path}"
    relay = await DicomwebBackend.open("relay", DicomwebBackendSettings(url=url, **options))
    try:
        yield relay
    finally:
        await relay.aclose()
        await runner.cleanup()


@contextlib.asynccontextmanager
async def running_origin(**options: Any) -> Any:
    """``async with running_origin() as origin:`` a started :class:`FakeOrigin`."""
    origin = FakeOrigin(**options)
    await origin.start()
    try:
        yield origin
    finally:
        await origin.close()
