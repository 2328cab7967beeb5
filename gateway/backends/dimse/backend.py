"""The ``dimse`` backend: the gateway as a DIMSE SCU of a RIS (proxy direction W->D).

Search becomes one streamed C-FIND (:mod:`.find`); Create, Update and Retrieve become
N-CREATE, N-SET and N-GET (:mod:`.mpps`) on pooled associations (:mod:`.pool`). A copy of
each forwarded MPPS is kept in the embedded store (:mod:`.mirror`). Every DIMSE outcome is
a :mod:`gateway.errors` error from :mod:`.outcomes`. Requests are validated with the shared
MPPS rules before anything is sent, so a modality gets the same 400/409 as from the local
store and the RIS never sees a request the gateway knows to be wrong.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from gateway.backends.base import MppsResult
from gateway.backends.dimse import mpps as n_ops
from gateway.backends.dimse.find import (
    MWL_FIND,
    RisMatchingKeys,
    next_message_id,
    set_charset,
    stream_find,
)
from gateway.backends.dimse.mirror import MppsMirror
from gateway.backends.dimse.outcomes import (
    AssociationDropped,
    AssociationLost,
    not_negotiated,
    response_to_json,
)
from gateway.backends.dimse.pool import AssociationPool
from gateway.errors import (
    ErrorKind,
    GatewayError,
    InstanceGone,
    InvalidAttributeValue,
    NoSuchInstance,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.logging import get_logger
from gateway.model import mpps as rules
from gateway.model.dicom_json import json_to_dataset
from gateway.model.query import WorklistQuery
from gateway.model.status import DimseStatus, Operation
from gateway.model.types import JsonDataset, tag_key
from gateway.settings import DimseBackendSettings, StoreSettings

log = get_logger("backends.dimse")

SOP_CLASSES = (
    MWL_FIND,
    rules.MPPS_SOP_CLASS_UID,
    rules.MPPS_RETRIEVE_SOP_CLASS_UID,
    str(Verification),
)
_SOP_UID_KEYS = (tag_key(rules.SOP_CLASS_UID), tag_key(rules.SOP_INSTANCE_UID))
_NOT_OFFERED = (ErrorKind.NOT_SUPPORTED,)

NOp = Callable[[Association, int], n_ops.NResult]


class DimseBackend:
    """The Backend protocol served by an upstream DIMSE RIS."""

    # Counting every match costs the whole upstream C-FIND: a front that wants only a page
    # should close the search after offset+limit(+1) results instead (C-CANCEL).
    cheap_remaining_count = False

    def __init__(
        self,
        name: str,
        settings: DimseBackendSettings,
        pool: AssociationPool,
        mirror: MppsMirror,
        ris_keys: RisMatchingKeys,
    ) -> None:
        self.name = name
        self.settings = settings
        self.pool = pool
        self.mirror = mirror
        self._ris_keys = ris_keys

    @classmethod
    async def open(
        cls,
        name: str,
        settings: DimseBackendSettings,
        store: StoreSettings,
        *,
        idle_timeout_s: float | None = None,
    ) -> DimseBackend:
        """Prepare the pool and the mirror; the RIS itself is only contacted on demand.

        A RIS that is down at start does not stop the gateway: requests get 503 until it
        is back. ``matching_keys`` is checked here (:class:`ConfigError` naming the key).
        """
        ris_keys = RisMatchingKeys.parse(settings.matching_keys, f"backends.{name}.matching_keys")
        extra = {} if idle_timeout_s is None else {"idle_timeout_s": idle_timeout_s}
        pool = AssociationPool(settings, SOP_CLASSES, **extra)
        mirror = await MppsMirror.open(store.path, name)
        log.info(
            "dimse backend ready",
            backend=name,
            ris=pool.where,
            max_associations=settings.max_associations,
            mpps_retrieve=settings.mpps_retrieve,
        )
        return cls(name, settings, pool, mirror, ris_keys)

    # --- Search ---------------------------------------------------------------------------

    def search_worklist(self, query: WorklistQuery) -> AsyncIterator[JsonDataset]:
        """One C-FIND, streamed; closing the iterator early sends C-CANCEL."""
        s = self.settings
        return stream_find(self.pool, query, self._ris_keys, s.charset, s.timeout_s)

    # --- MPPS -----------------------------------------------------------------------------

    async def create_mpps(self, uid: str, attributes: JsonDataset) -> MppsResult:
        """N-CREATE with the URL's UID as Affected SOP Instance UID, then mirror it."""
        stored = rules.validate_create(uid, attributes)
        wire = self._wire_dataset(stored)
        result = await self._n_op(
            lambda assoc, msg_id: n_ops.n_create(
                assoc, uid, wire, msg_id=msg_id, timeout_s=self.settings.timeout_s
            ),
            Operation.CREATE,
            idempotent=False,
        )
        await self._keep_copy(uid, stored)
        log.info("MPPS created upstream", backend=self.name, uid=uid)
        return MppsResult(stored, _warnings(result))

    async def update_mpps(self, uid: str, changes: JsonDataset) -> MppsResult:
        """N-SET; checked first against the mirror copy when the gateway has one."""
        stored = await self.mirror.get(uid)
        merged = rules.apply_update(stored, changes) if stored is not None else None
        wire = self._wire_dataset(changes)
        try:
            result = await self._n_op(
                lambda assoc, msg_id: n_ops.n_set(
                    assoc, uid, wire, msg_id=msg_id, timeout_s=self.settings.timeout_s
                ),
                Operation.UPDATE,
                idempotent=False,
            )
        except NoSuchInstance as exc:
            raise _gone_if_known(exc, stored) from None
        if merged is not None:
            await self._keep_copy(uid, merged)
        log.info("MPPS updated upstream", backend=self.name, uid=uid)
        if merged is not None:
            return MppsResult(merged, _warnings(result))
        returned = _to_json(result.attributes)
        return MppsResult(returned or rules.select_attributes(changes, None), _warnings(result))

    async def retrieve_mpps(self, uid: str, tags: Sequence[int] | None = None) -> MppsResult:
        """N-GET, or the mirror per ``mpps_retrieve`` (and when the RIS offers no N-GET)."""
        if self.settings.mpps_retrieve == "mirror":
            return await self._from_mirror(uid, tags)
        try:
            result = await self._n_op(
                lambda assoc, msg_id: n_ops.n_get(
                    assoc, uid, tags, msg_id=msg_id, timeout_s=self.settings.timeout_s
                ),
                Operation.RETRIEVE,
                idempotent=True,
            )
        except GatewayError as exc:
            if exc.kind in _NOT_OFFERED:
                try:
                    return await self._from_mirror(uid, tags)
                except NoSuchInstance:
                    raise exc from None
            if isinstance(exc, NoSuchInstance):
                raise _gone_if_known(exc, await self.mirror.get(uid)) from None
            raise
        dataset = _to_json(result.attributes)
        if tags is not None:
            dataset = rules.select_attributes(dataset, tags)
        return MppsResult(dataset, _warnings(result))

    # --- lifecycle ------------------------------------------------------------------------

    async def check_ready(self) -> None:
        """Associate (or reuse an association) and C-ECHO when Verification was accepted.

        With every association in use the RIS is evidently answering: ready, at once (a
        readiness probe must not queue behind Searches).
        """
        if self.pool.saturated:
            return
        async with self.pool.lease() as lease:
            await lease.run(_echo)

    async def aclose(self) -> None:
        """Release associations and close the mirror."""
        try:
            await self.pool.aclose()
        finally:
            await self.mirror.aclose()

    # --- internals ------------------------------------------------------------------------

    def _wire_dataset(self, attributes: JsonDataset) -> Dataset:
        """The attribute list to send: no SOP Class/Instance UID, in the RIS's charset."""
        body = {k: v for k, v in attributes.items() if k not in _SOP_UID_KEYS}
        ds = json_to_dataset(body)
        set_charset(ds, self.settings.charset, InvalidAttributeValue)
        return ds

    async def _keep_copy(self, uid: str, dataset: JsonDataset) -> None:
        """Mirror ``dataset``; the RIS has already done the work, so a failure only logs."""
        try:
            await self.mirror.put(uid, dataset)
        except GatewayError as exc:
            log.warning("MPPS mirror not updated", backend=self.name, uid=uid, error=str(exc))

    async def _from_mirror(self, uid: str, tags: Sequence[int] | None) -> MppsResult:
        stored = await self.mirror.get(uid)
        if stored is None:
            raise NoSuchInstance("the gateway has no copy of this MPPS")
        warnings: tuple[str, ...] = ()
        missing = rules.missing_requested(stored, tags)
        if missing:
            names = ", ".join(f"({t >> 16:04X},{t & 0xFFFF:04X})" for t in missing)
            warnings = (f"requested attributes not held for this MPPS: {names}",)
        return MppsResult(rules.select_attributes(stored, tags), warnings)

    async def _n_op(self, op: NOp, operation: Operation, *, idempotent: bool) -> n_ops.NResult:
        """Run one N-* operation on a pooled association.

        An association found dead before the request went out is replaced once; after the
        request went out only idempotent operations (N-GET) are retried, and only when the
        association was an idle one that the RIS had dropped.
        """
        fresh = False
        while True:
            async with self.pool.lease(fresh=fresh) as lease:
                try:
                    return await lease.run(lambda assoc: op(assoc, next_message_id()))
                except n_ops.NotNegotiated as exc:
                    raise not_negotiated(operation, exc.sop_class) from None
                except UpstreamTimeout:
                    # No answer (pynetdicom aborted, or the RIS did): never reuse it, even
                    # while pynetdicom still calls it established for a moment.
                    lease.discard()
                    raise
                except (AssociationLost, AssociationDropped) as exc:
                    lease.discard()
                    stale = isinstance(exc, AssociationLost) or (idempotent and exc.quick)
                    if fresh or not lease.reused or not stale:
                        raise
                    log.info("stale association replaced", ris=self.pool.where)
                    fresh = True


def _echo(assoc: Association) -> None:
    if not n_ops.accepts(assoc, str(Verification)):
        return
    status = assoc.send_c_echo(msg_id=next_message_id())
    if getattr(status, "Status", None) is None:
        raise UpstreamUnavailable("the RIS did not answer C-ECHO")


def _warnings(result: n_ops.NResult) -> tuple[str, ...]:
    return (result.warning,) if result.warning else ()


def _to_json(attributes: Dataset | None) -> JsonDataset:
    if attributes is None:
        return {}
    return response_to_json(attributes, "an MPPS")


def _gone_if_known(exc: NoSuchInstance, mirrored: JsonDataset | None) -> GatewayError:
    """0112 for an MPPS the gateway forwarded itself: it existed, so 410 rather than 404."""
    if mirrored is None or exc.upstream_status != DimseStatus.NO_SUCH_SOP_INSTANCE:
        return exc
    return InstanceGone(
        "the RIS no longer has this MPPS",
        upstream_status=exc.upstream_status,
        upstream_detail=exc.upstream_detail,
    )
