"""The ``dicomweb`` backend: the gateway as a DICOMweb user agent (PS3.18 ch. 14/15).

Modality Worklist C-FIND becomes a paged Search, MPPS N-CREATE/N-SET/N-GET become
Create/Update/Retrieve on one upstream origin server (proxy direction D->W in
``status-mapping.md``). Results stream through unchanged; the fronts trim them to what the
modality asked for (``query.project``) and encode them in its character set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from typing import Any

import anyio
import anyio.lowlevel

from gateway.backends.base import MppsResult
from gateway.backends.dicomweb.client import DicomwebClient, RetryPolicy
from gateway.backends.dicomweb.outcomes import bad_response
from gateway.errors import (
    FinalStateViolation,
    GatewayError,
    IncompatibleUpdate,
    InvalidPayload,
    PayloadTooLarge,
)
from gateway.logging import get_logger
from gateway.model.dicom_json import validate_json_dataset
from gateway.model.mpps import select_attributes, status_of, validate_create
from gateway.model.mpps_table import PPS_STATUS
from gateway.model.mwl_keys import path_to_tags
from gateway.model.query import WorklistQuery
from gateway.model.status import HttpStatus, Operation
from gateway.model.types import JsonDataset, tag_key
from gateway.model.uids import validate_uid
from gateway.settings import DicomwebBackendSettings

log = get_logger("dicomweb.backend")

MWL_RESOURCE = "modality-scheduled-procedure-steps"
MPPS_RESOURCE = "modality-performed-procedure-steps"
PAGING_PARAMS = frozenset({"offset", "limit"})

MAX_SEARCH_RESULTS = 100_000
"""Results one search may page through before it is refused (A700)."""
_REMAINING_RE = re.compile(r"There are (\d+) additional results")
_WARNING_RE = re.compile(r"^\s*\d{3}\s+\S+\s+(.*)$", re.DOTALL)


class DicomwebBackend:
    """The Backend protocol on an upstream DICOMweb origin server."""

    # Counting every match would page through the whole upstream result set.
    cheap_remaining_count = False

    def __init__(self, name: str, settings: DicomwebBackendSettings, client: DicomwebClient):
        self.name = name
        self._settings = settings
        self._client = client

    @classmethod
    async def open(
        cls,
        name: str,
        settings: DicomwebBackendSettings,
        *,
        environ: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
    ) -> DicomwebBackend:
        """Create the pooled session for ``[backends.<name>]`` (credentials from ``environ``).

        Raises :class:`gateway.errors.ConfigError` for a missing credential variable or an
        unreadable CA file. Nothing is sent until the first request.
        """
        client = DicomwebClient.open(settings, key=f"backends.{name}", environ=environ, retry=retry)
        return cls(name, settings, client)

    # --- Search -------------------------------------------------------------------------

    async def search_worklist(self, query: WorklistQuery) -> AsyncGenerator[JsonDataset, None]:
        """Page through the origin's Search, yielding each result as soon as it is parsed.

        Pages ask for ``page_size`` results; ``first_page_size``, if set, for the first one
        (capped by ``page_size``). A small first page reaches the modality sooner, but the
        next request then lands while the DIMSE front is busiest, and on the benchmark the
        pause at that page boundary cost more than the earlier start saved. The next page is
        fetched while the DIMSE front is still sending (its buffer runs ahead) and requested
        while the origin's Warning says results remain (an origin that sent the Warning once
        is finished when a page comes without it), or, from an origin that never sends it,
        while pages come back full. A 413 halves the page size (PS3.2 user-agent template).
        Closing this generator closes the HTTP response at once, mid-page included.
        """
        params = search_params(query)
        uid_lists = frozenset(path_to_tags(key.path) for key in query.keys if key.vr == "UI")
        page_size = self._settings.page_size
        offset, limit = 0, min(self._settings.first_page_size or page_size, page_size)
        counts = False  # has the origin announced remaining results in this search?
        while True:
            url = self._client.url(
                MWL_RESOURCE,
                query=[*params, ("offset", str(offset)), ("limit", str(limit))],
                list_params=uid_lists,
            )
            received = 0
            remaining: int | None = None
            try:
                if offset >= MAX_SEARCH_RESULTS:
                    # An origin that ignores offset would otherwise be paged for ever.
                    raise PayloadTooLarge(f"more than {MAX_SEARCH_RESULTS} results upstream")
                async with self._client.request(
                    "GET", url, Operation.FIND, idempotent=True
                ) as response:
                    texts = warning_texts(response.warnings)
                    remaining = remaining_results(texts)
                    _log_warnings(self.name, texts)
                    async with contextlib.aclosing(response.json_array()) as items:
                        async for item in items:
                            received += 1
                            checked = _checked(item, query)
                            # A cancel lands between results, without a round trip
                            # through the event loop for each one.
                            await anyio.lowlevel.checkpoint_if_cancelled()
                            yield checked
            except GatewayError as error:
                too_large = error.upstream_status == HttpStatus.PAYLOAD_TOO_LARGE
                if not (too_large and received == 0 and limit > 1):
                    raise
                limit = max(1, limit // 2)
                page_size = min(page_size, limit)
                log.info("upstream page too large, halving", limit=limit)
                continue
            counts = counts or remaining is not None
            if received == 0 or remaining == 0 or (remaining is None and counts):
                return  # an origin that announced remaining results stops announcing at 0
            if remaining is None and received != limit:
                # Short page: the end. Longer than asked: the origin ignored limit and
                # sent everything at once.
                return
            offset += received
            limit = page_size

    # --- MPPS ---------------------------------------------------------------------------

    async def create_mpps(self, uid: str, attributes: JsonDataset) -> MppsResult:
        """Create (15.4): POST (draft: PUT) the N-CREATE attributes to ``…/{uid}``.

        The attributes are checked against Table F.7.2-1 first, so a modality gets the
        precise 0117/0120/0121/0106 instead of the 0110 an upstream 400 would give.
        """
        stored = validate_create(uid, attributes)
        method = "PUT" if self._settings.mpps_dialect == "draft" else "POST"
        url = self._client.url(MPPS_RESOURCE, uid)
        async with self._client.request(method, url, Operation.CREATE, body=attributes) as response:
            await response.discard()
            warnings = warning_texts(response.warnings)
        log.info("MPPS created upstream", backend=self.name, mpps_uid=uid)
        # What a conformant origin now holds: the attributes plus the SOP Class/Instance UIDs.
        return MppsResult(dataset=stored, warnings=warnings)

    async def update_mpps(self, uid: str, changes: JsonDataset) -> MppsResult:
        """Update (15.5): POST ``…/{uid}?update`` (draft: PATCH ``…/{uid}``).

        A 409 the origin does not explain is checked with a Retrieve of the status: a final
        MPPS becomes 0110 + A710 for the modality (status-mapping §4.2), anything else 0110.
        """
        validate_uid(uid)
        if self._settings.mpps_dialect == "draft":
            method, url = "PATCH", self._client.url(MPPS_RESOURCE, uid)
        else:
            method, url = "POST", self._client.url(MPPS_RESOURCE, uid, query="update")
        try:
            async with self._client.request(
                method, url, Operation.UPDATE, body=changes
            ) as response:
                await response.discard()
                warnings = warning_texts(response.warnings)
        except IncompatibleUpdate as error:
            raise await self._explain_conflict(uid, error) from None
        log.info("MPPS updated upstream", backend=self.name, mpps_uid=uid)
        return MppsResult(dataset=await self._held_after_update(uid, changes), warnings=warnings)

    async def _held_after_update(self, uid: str, changes: JsonDataset) -> JsonDataset:
        """The MPPS as the origin holds it now (one Retrieve), else just the changes.

        The Backend contract returns the whole MPPS; Update answers without a body and
        Retrieve is optional upstream, so a failed Retrieve never fails the update.
        """
        try:
            return (await self.retrieve_mpps(uid)).dataset
        except GatewayError as error:
            log.info("MPPS not retrievable after update", backend=self.name, kind=error.kind.value)
            return changes

    async def retrieve_mpps(self, uid: str, tags: Sequence[int] | None = None) -> MppsResult:
        """Retrieve (15.6): GET ``…/{uid}`` with ``includefield`` for ``tags``."""
        validate_uid(uid)
        query = [("includefield", ",".join(tag_key(t) for t in tags))] if tags else []
        url = self._client.url(MPPS_RESOURCE, uid, query=query)
        async with self._client.request(
            "GET", url, Operation.RETRIEVE, idempotent=True
        ) as response:
            body = await response.json()
            warnings = warning_texts(response.warnings)
        if isinstance(body, list) and len(body) == 1:
            body = body[0]
        if not isinstance(body, dict):
            raise bad_response("Retrieve did not return one dataset")
        return MppsResult(dataset=select_attributes(_validated(body), tags), warnings=warnings)

    async def _explain_conflict(self, uid: str, error: IncompatibleUpdate) -> GatewayError:
        try:
            current = await self.retrieve_mpps(uid, [PPS_STATUS])
        except GatewayError:
            return error
        status = status_of(current.dataset)
        if status is None or not status.is_final:
            return error
        return FinalStateViolation(
            f"MPPS is {status.value}; it may no longer be updated",
            offending=(PPS_STATUS,),
            upstream_status=error.upstream_status,
            upstream_detail=error.upstream_detail,
        )

    # --- lifecycle ----------------------------------------------------------------------

    async def check_ready(self) -> None:
        """One Search with ``limit=1``: proves reachability, credentials and the service."""
        url = self._client.url(MWL_RESOURCE, query=[("limit", "1")])
        async with self._client.request("GET", url, Operation.FIND) as response:
            await response.discard()

    async def aclose(self) -> None:
        """Close the pooled HTTP connections."""
        await self._client.aclose()


def search_params(query: WorklistQuery) -> list[tuple[str, str]]:
    """The query's match/includefield/fuzzymatching parameters without its own paging.

    Paging towards the modality is the caller's business (the Backend contract); towards
    the origin the backend pages with its own ``offset``/``limit``.
    """
    unpaged = dataclasses.replace(query, offset=0, limit=None)
    return [(k, v) for k, v in unpaged.to_query_params() if k not in PAGING_PARAMS]


def warning_texts(headers: Iterable[str]) -> tuple[str, ...]:
    """The free texts of ``Warning: 299 {service}: {text}`` headers (quoted form too)."""
    texts = []
    for header in headers:
        match = _WARNING_RE.match(header)
        text = (match.group(1) if match else header).strip()
        if text.startswith('"'):
            text = text[1:].split('"', 1)[0]
        if text:
            texts.append(text)
    return tuple(texts)


def _log_warnings(backend: str, texts: Iterable[str]) -> None:
    """C-FIND has no place for them (FF01 is about keys): log, as status-mapping §3.2 says."""
    for text in texts:
        if not _REMAINING_RE.search(text):
            log.info("upstream search warning", backend=backend, warning=text[:200])


def remaining_results(texts: Iterable[str]) -> int | None:
    """N from "There are N additional results that can be requested" (PS3.18 8.3.4.4.1)."""
    for text in texts:
        match = _REMAINING_RE.search(text)
        if match:
            return int(match.group(1))
    return None


def _checked(item: Any, query: WorklistQuery) -> JsonDataset:
    """A result the origin sent, checked for the DICOM JSON shape: its garbage is its fault.

    Only the structure is checked here (8-hex keys, attribute objects with a VR, lists of
    values, sequence items as objects), and only of what the query returns (the rest is
    dropped by its projection), which is cheap enough for every result; the fronts'
    conversions check values of the attributes they actually send on.
    """
    problem = query.shape_problem(item)
    if problem is not None:
        raise bad_response(problem)  # short: a modality's 64-character Error Comment keeps it
    result: JsonDataset = item
    return result


def _validated(dataset: Any) -> JsonDataset:
    """One dataset fully checked (a Retrieve answer is small enough for every value)."""
    try:
        validate_json_dataset(dataset)
    except (InvalidPayload, PayloadTooLarge) as exc:
        raise bad_response(exc.message) from None  # names the attribute, like _checked
    result: JsonDataset = dataset
    return result
