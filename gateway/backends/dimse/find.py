"""Search served by a DIMSE MWL SCP: one C-FIND, streamed, cancelled when no longer needed.

* The identifier asks for every Table K.6-1 Type 1/2 return key plus what the query asked
  for (PS3.18 14.4.2: Search results are complete, ``status-mapping.md`` §5).
* Matching keys go to the RIS only where it can match them (``matching_keys``; empty means
  all). The others are sent as return keys and matched by the gateway on the results with
  :meth:`WorklistQuery.matches`, together with their siblings in the same sequence item so
  sequence and combined date-time matching see the whole item.
* Responses are decoded by their Specific Character Set and converted to DICOM JSON in the
  worker thread that reads them, one match per thread hop.
* When the consumer closes the stream early (limit reached, client gone) the C-FIND is
  cancelled with C-CANCEL and drained to its final status, so the association can be
  reused; if that fails the association is discarded.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass

import anyio
from pydicom.charset import python_encoding
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName
from pynetdicom.association import Association
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from gateway.backends.dimse import outcomes
from gateway.backends.dimse.pool import AssociationPool, Lease
from gateway.errors import (
    BadQuery,
    ConfigError,
    GatewayError,
    UpstreamBadResponse,
    UpstreamFailure,
)
from gateway.logging import get_logger
from gateway.model import mwl_keys
from gateway.model.query import QueryKey, WorklistQuery
from gateway.model.status import DimseStatus, Operation
from gateway.model.types import JsonDataset, TagPath, tag_key

log = get_logger("backends.dimse.find")

MWL_FIND = str(ModalityWorklistInformationFind)
DEFAULT_REPERTOIRE_TERMS = frozenset({"", "ISO_IR 6"})
SPECIFIC_CHARACTER_SET_KEY = tag_key(mwl_keys.SPECIFIC_CHARACTER_SET)
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
_PENDING = frozenset({DimseStatus.PENDING, DimseStatus.PENDING_WARNING})


# --- which keys the RIS matches -----------------------------------------------------------


@dataclass(frozen=True)
class RisMatchingKeys:
    """The keys a RIS can match on (``matching_keys``); empty means it matches all.

    Each entry is a dotted attribute path of keywords or 8-hex tags
    (``ScheduledProcedureStepSequence.Modality``). An entry of one component also covers
    that attribute inside sequences (``Modality``), since MWL keys are unique by tag.
    """

    paths: frozenset[TagPath] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str], key: str) -> RisMatchingKeys:
        """Parse ``matching_keys``; raise :class:`ConfigError` naming ``key[i]``."""
        paths: set[TagPath] = set()
        for i, text in enumerate(entries):
            try:
                paths.add(mwl_keys.keyword_to_path(text.strip()))
            except ValueError as exc:
                raise ConfigError(f"{key}[{i}]", str(exc)) from None
        return cls(frozenset(paths))

    @property
    def all(self) -> bool:
        """True when the RIS is trusted to match every key."""
        return not self.paths

    def can_match(self, path: TagPath) -> bool:
        """True when the RIS matches the key at ``path``."""
        if self.all or path in self.paths:
            return True
        return (path[-1],) in self.paths


# --- the plan: identifier for the RIS, filter for the gateway ------------------------------


@dataclass(frozen=True)
class FindPlan:
    """What one Search sends to the RIS and what the gateway still has to match."""

    identifier: Dataset
    local_filter: WorklistQuery | None  # None: the RIS matched everything itself
    # includefield=all: zero-length attributes at paths outside this set are dropped
    keep_empty: frozenset[TagPath] | None = None


def plan_find(query: WorklistQuery, ris_keys: RisMatchingKeys, charset: str) -> FindPlan:
    """Build the C-FIND identifier and the gateway-side filter for ``query``."""
    local = [k for k in query.keys if k.is_matching and not ris_keys.can_match(k.path)]
    local_filter: WorklistQuery | None = None
    if local:
        parents = {k.path[:-1] for k in local}
        local_keys = tuple(
            k
            for k in query.keys
            if k.is_matching and (k in local or (len(k.path) > 1 and k.path[:-1] in parents))
        )
        local_filter = dataclasses.replace(query, keys=local_keys, offset=0, limit=None)
    to_ris = tuple(
        QueryKey(k.path, k.vr, ()) if k in local else k for k in query.keys
    )  # a key the RIS cannot match is still asked for, so the gateway can match it
    ris_query = dataclasses.replace(query, keys=to_ris)
    ris_query = ris_query.with_return_keys(_return_keys(query))
    identifier = ris_query.to_identifier()
    set_charset(identifier, charset, BadQuery)
    keep_empty = None
    if query.include_all:
        asked = {k.path for k in query.keys}
        keep_empty = frozenset(asked | set(mwl_keys.DICOMWEB_REQUIRED_RETURN_KEYS))
    return FindPlan(identifier, local_filter, keep_empty)


def _return_keys(query: WorklistQuery) -> Sequence[TagPath]:
    """Every Type 1/2 key, or every K.6-1 key for ``includefield=all``.

    :meth:`WorklistQuery.with_return_keys` leaves out paths inside a sequence the query
    asks for whole, so the SCP still returns that sequence whole (PS3.4 C.2.2.2.6).
    """
    if query.include_all:
        return _all_model_keys()
    return mwl_keys.DICOMWEB_REQUIRED_RETURN_KEYS


@functools.cache
def _all_model_keys() -> tuple[TagPath, ...]:
    """K.6-1 with its sequence structure; code sequences are asked for whole."""
    out: list[TagPath] = []
    for path, key in mwl_keys.MWL_KEYS.items():
        if key.source != "K.6-1":
            continue
        ancestors = [path[:i] for i in range(1, len(path))]
        if any(mwl_keys.MWL_KEYS[a].code_sequence for a in ancestors if a in mwl_keys.MWL_KEYS):
            continue
        out.append(path)
    return tuple(out)


def set_charset(ds: Dataset, charset: str, error: type[GatewayError]) -> None:
    """Declare ``charset`` in ``ds`` (0008,0005) and check every text value fits in it.

    The default repertoire (``""``/``ISO_IR 6``) is declared by leaving the element out.
    A value that cannot be represented raises ``error`` naming its tag, instead of being
    silently replaced by pydicom on encoding.
    """
    term = charset.strip()
    if term in DEFAULT_REPERTOIRE_TERMS:
        if "SpecificCharacterSet" in ds:
            del ds.SpecificCharacterSet
        codec = "ascii"
    else:
        ds.SpecificCharacterSet = term
        codec = python_encoding.get(term, "")
    if codec:
        for tag in _unencodable(ds, codec):
            raise error(
                f"a value cannot be represented in the RIS's character set {term or 'ISO_IR 6'}",
                offending=(tag,),
            )


def _unencodable(ds: Dataset, codec: str) -> Iterator[int]:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _unencodable(item, codec)
            continue
        if elem.VR not in _TEXT_VRS or elem.value is None:
            continue
        values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
        for value in values:
            text = str(value) if isinstance(value, PersonName) else value
            if not isinstance(text, str):
                continue
            try:
                text.encode(codec)
            except UnicodeEncodeError:
                yield int(elem.tag)
                break


# --- the blocking side: one C-FIND on one association (worker threads) --------------------


class FindCall:
    """One C-FIND on a leased association; every method blocks and runs in a worker thread."""

    def __init__(self, plan: FindPlan, msg_id: int, timeout_s: float) -> None:
        self._plan = plan
        self.msg_id = msg_id
        self._timeout_s = timeout_s
        self._responses: Iterator[tuple[Dataset, Dataset | None]] | None = None
        self._context_id: int | None = None
        self.started = False
        self.finished = False  # the RIS sent its final status (or the association died)
        self.cancelled = False
        self.broken = False  # no answer (abort, timeout): the association is unusable

    def start(self, assoc: Association) -> None:
        """Send the C-FIND-RQ."""
        context = next(
            (cx for cx in assoc.accepted_contexts if cx.abstract_syntax == MWL_FIND), None
        )
        if context is None:
            self.finished = True
            raise outcomes.not_negotiated(Operation.FIND, MWL_FIND)
        self._context_id = context.context_id
        try:
            self._responses = assoc.send_c_find(self._plan.identifier, MWL_FIND, msg_id=self.msg_id)
        except RuntimeError as exc:  # the association went away while idle
            self.finished = True
            raise outcomes.AssociationLost(
                "the association to the RIS was lost", upstream_detail=str(exc)
            ) from exc
        self.started = True

    def next_match(self, assoc: Association) -> JsonDataset | None:
        """The next result the gateway's own filter accepts; ``None`` after Success."""
        del assoc
        while True:
            status, identifier = self._receive()
            code = outcomes.status_code(status)
            if code in _PENDING:
                item = self._convert(identifier)
                if item is None:
                    continue
                return item
            self.finished = True
            if code == DimseStatus.CANCEL:
                if self.cancelled:
                    return None
                raise UpstreamFailure(
                    "the RIS cancelled the C-FIND on its own",
                    upstream_status=code,
                    upstream_detail="unrequested Cancel (FE00): the worklist is incomplete",
                )
            assert code is not None
            if code == DimseStatus.SUCCESS or outcomes.is_warning(code):
                return None
            raise outcomes.failure(Operation.FIND, status)

    def cancel(self, assoc: Association) -> bool:
        """Send C-CANCEL and read up to the final status; True if ``assoc`` is reusable."""
        if self.finished or not self.started:
            return assoc.is_established
        self.cancelled = True
        try:
            assoc.send_c_cancel(self.msg_id, self._context_id)
        except RuntimeError:
            return False
        log.info("C-CANCEL sent", msg_id=self.msg_id)
        while not self.finished:
            try:
                status, _ = self._receive()
            except GatewayError:
                return False
            if outcomes.status_code(status) not in _PENDING:
                self.finished = True
        return assoc.is_established

    def _receive(self) -> tuple[Dataset, Dataset | None]:
        assert self._responses is not None
        started = time.monotonic()
        status, identifier = next(self._responses, (Dataset(), None))
        if outcomes.status_code(status) is None:
            self.finished = True
            self.broken = True
            elapsed = time.monotonic() - started
            raise outcomes.no_response(Operation.FIND, elapsed_s=elapsed, timeout_s=self._timeout_s)
        return status, identifier

    def _convert(self, identifier: Dataset | None) -> JsonDataset | None:
        if identifier is None:
            raise UpstreamBadResponse("the RIS sent a C-FIND response that cannot be decoded")
        item = outcomes.response_to_json(identifier, "a worklist item")
        # The JSON is Unicode: the character set the RIS encoded its answer in is spent.
        item.pop(SPECIFIC_CHARACTER_SET_KEY, None)
        if self._plan.keep_empty is not None:
            _drop_unasked_empty(item, self._plan.keep_empty, ())
        local = self._plan.local_filter
        if local is not None and not local.matches(item):
            return None
        return item


def _drop_unasked_empty(item: JsonDataset, keep: frozenset[TagPath], parent: TagPath) -> None:
    """``includefield=all`` asks the RIS for every key, and it answers each one, empty when
    it has no value. "All available attributes" (PS3.18 8.3.4.3) are the ones with a value,
    so empty ones nobody asked for by name and no Type 1/2 rule requires are dropped."""
    for key in list(item):
        path = (*parent, int(key, 16))
        attr = item[key]
        values = attr.get("Value") if isinstance(attr, dict) else None
        if not values:
            if path not in keep:
                del item[key]
        elif attr.get("vr") == "SQ":
            for nested in values:
                if isinstance(nested, dict):
                    _drop_unasked_empty(nested, keep, path)


# --- the async side ------------------------------------------------------------------------


_message_ids = itertools.count(1)


def next_message_id() -> int:
    """A Message ID (1-65535); unique enough among one association's outstanding requests."""
    return (next(_message_ids) - 1) % 0xFFFF + 1


async def stream_find(
    pool: AssociationPool,
    query: WorklistQuery,
    ris_keys: RisMatchingKeys,
    charset: str,
    timeout_s: float,
) -> AsyncIterator[JsonDataset]:
    """Yield the matches of ``query``; closing the generator early sends C-CANCEL.

    Planning errors (a value the RIS's character set cannot carry) surface on the first
    iteration. A reused association that turns out to be dead before any result was
    yielded is replaced once by a fresh one (the RIS dropped it while it was idle).
    """
    plan = plan_find(query, ris_keys, charset)
    fresh = False
    while True:
        yielded = False
        async with pool.lease(fresh=fresh) as lease:
            call = FindCall(plan, next_message_id(), timeout_s)
            try:
                await lease.run(call.start)
                while True:
                    item = await lease.run(call.next_match)
                    if item is None:
                        return
                    yielded = True
                    yield item
            except (outcomes.AssociationLost, outcomes.AssociationDropped) as exc:
                stale = isinstance(exc, outcomes.AssociationLost) or exc.quick
                if yielded or fresh or not lease.reused or not stale:
                    raise
                log.info("stale association replaced", ris=pool.where)
                fresh = True
            finally:
                await _finish(lease, call)


async def _finish(lease: Lease, call: FindCall) -> None:
    """Cancel an unfinished C-FIND (shielded: it runs while the consumer goes away)."""
    if call.finished:
        # pynetdicom may still call an aborted association established for a moment.
        if call.broken or not lease.assoc.is_established:
            lease.discard()
        return
    with anyio.CancelScope(shield=True):
        try:
            reusable = await lease.run(call.cancel)
        except Exception:  # any failure here only costs the association
            reusable = False
    if not reusable:
        lease.discard()


__all__ = [
    "FindCall",
    "FindPlan",
    "RisMatchingKeys",
    "plan_find",
    "set_charset",
    "stream_find",
]
