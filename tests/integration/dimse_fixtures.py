"""A running DIMSE front over a real local store, for tests that speak DIMSE on loopback.

The event loop runs in its own thread (``anyio.from_thread.start_blocking_portal``), as in
the application: the portal created there is the one the front bridges through, and the
tests themselves stay synchronous, like a modality. Use in a test module with::

    pytest_plugins = ("tests.integration.dimse_fixtures",)
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, aclosing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association

from gateway.backends.base import Backend, MppsResult
from gateway.backends.local import LocalBackend
from gateway.dimse import DimseFront
from gateway.dimse.association import MPPS, MPPS_RETRIEVE, VERIFICATION, WORKLIST_FIND
from gateway.model.query import WorklistQuery
from gateway.model.status import DimseStatus
from gateway.model.types import JsonDataset
from gateway.settings import Settings, settings_from_mapping

GATEWAY_AE = "MODALITY_GW"
SCU_AE = "TEST_SCU"
ALL_SOP_CLASSES = (VERIFICATION, WORKLIST_FIND, MPPS, MPPS_RETRIEVE)
TRANSFER_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
PENDING = DimseStatus.PENDING


@dataclass
class DimseHarness:
    """The front, its store and the portal they share, plus an SCU helper.

    ``backend`` is the real store; the front may see it through a test wrapper.
    """

    front: DimseFront
    backend: LocalBackend
    portal: BlockingPortal
    settings: Settings
    port: int

    def load_worklist(self, items: Iterable[JsonDataset]) -> None:
        """Import worklist items into the store (through the portal, like the app)."""
        self.portal.call(self.backend.upsert_worklist_items, list(items))

    def associate(
        self,
        calling_ae: str = SCU_AE,
        *,
        called_ae: str = GATEWAY_AE,
        sop_classes: Iterable[str] = ALL_SOP_CLASSES,
        transfer_syntaxes: Iterable[str] = TRANSFER_SYNTAXES,
        evt_handlers: list[Any] | None = None,
    ) -> Association:
        """A pynetdicom SCU association (established or rejected: check ``is_established``)."""
        ae = AE(ae_title=calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        for uid in sop_classes:
            ae.add_requested_context(uid, list(transfer_syntaxes))
        return ae.associate("127.0.0.1", self.port, ae_title=called_ae, evt_handlers=evt_handlers)


def dimse_settings(store: Path, **dimse: Any) -> Settings:
    """Validated settings for a loopback front on port 0 (``dimse`` overrides ``[dimse]``)."""
    table: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "ae_title": GATEWAY_AE, **dimse}
    return settings_from_mapping({"dimse": table, "store": {"path": str(store)}})


BackendWrapper = Callable[[LocalBackend], Backend]


@contextmanager
def running_dimse(
    store: Path, *, wrap: BackendWrapper | None = None, **dimse: Any
) -> Iterator[DimseHarness]:
    """Start an event loop + portal, open the store, start the front; undo on exit.

    ``wrap`` puts a test double (fault injection, observation) between front and store.
    """
    settings = dimse_settings(store, **dimse)
    with start_blocking_portal() as portal:
        backend = portal.call(LocalBackend.open, settings.store)
        try:
            served: Backend = backend if wrap is None else wrap(backend)
            front = DimseFront(settings, served, portal)
            port = front.start()
            try:
                yield DimseHarness(front, backend, portal, settings, port)
            finally:
                front.stop(5.0)
        finally:
            portal.call(backend.aclose)


@pytest.fixture
def dimse(tmp_path: Path) -> Iterator[DimseHarness]:
    """A DIMSE front with default policy over an empty local store."""
    with running_dimse(tmp_path / "gateway.sqlite3") as harness:
        yield harness


@pytest.fixture
def dimse_factory(tmp_path: Path) -> Iterator[Callable[..., DimseHarness]]:
    """Start fronts with ``[dimse]`` overrides, e.g. ``dimse_factory(max_associations=1)``,
    and optionally ``wrap=`` a test double around the store."""
    with ExitStack() as stack:
        count = 0

        def make(*, wrap: BackendWrapper | None = None, **dimse: Any) -> DimseHarness:
            nonlocal count
            count += 1
            store = tmp_path / f"gateway-{count}.sqlite3"
            return stack.enter_context(running_dimse(store, wrap=wrap, **dimse))

        yield make


# --- helpers shared by the DIMSE tests ------------------------------------------------------


def worklist_item(
    n: int,
    *,
    patient_name: str = "DOE^JOHN",
    modality: str = "CT",
    station_ae: str = "CT1",
) -> JsonDataset:
    """One scheduled procedure step (unique per ``n``) in the DICOM JSON Model."""
    return {
        "00080050": {"vr": "SH", "Value": [f"ACC{n:05d}"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": patient_name}]},
        "00100020": {"vr": "LO", "Value": [f"PID{n:05d}"]},
        "00100030": {"vr": "DA", "Value": ["19700101"]},
        "00100040": {"vr": "CS", "Value": ["O"]},
        "0020000D": {"vr": "UI", "Value": [f"1.2.826.0.1.3680043.10.1.{n}"]},
        "00321060": {"vr": "LO", "Value": ["CT HEAD"]},
        "00401001": {"vr": "SH", "Value": [f"RP{n:05d}"]},
        "00400100": {
            "vr": "SQ",
            "Value": [
                {
                    "00080060": {"vr": "CS", "Value": [modality]},
                    "00400001": {"vr": "AE", "Value": [station_ae]},
                    "00400002": {"vr": "DA", "Value": ["20250101"]},
                    "00400003": {"vr": "TM", "Value": [f"{8 + n % 10:02d}0000"]},
                    "00400007": {"vr": "LO", "Value": ["HEAD PLAIN"]},
                    "00400009": {"vr": "SH", "Value": [f"SPS{n:05d}"]},
                }
            ],
        },
    }


@dataclass
class FindResult:
    """All responses of one C-FIND: the pending identifiers and the final status."""

    identifiers: list[Dataset]
    final: Dataset

    @property
    def status(self) -> int:
        return int(self.final.Status)


def c_find(assoc: Association, identifier: Dataset, *, msg_id: int = 1) -> FindResult:
    """Send a worklist C-FIND and collect every response."""
    identifiers: list[Dataset] = []
    final: Dataset | None = None
    for status, found in assoc.send_c_find(identifier, WORKLIST_FIND, msg_id=msg_id):
        assert "Status" in status, "no response from the SCP (timeout or abort)"
        if status.Status == PENDING:
            assert found is not None
            identifiers.append(found)
        else:
            final = status
    assert final is not None
    return FindResult(identifiers, final)


def worklist_query(**top: Any) -> Dataset:
    """A worklist identifier: ``top`` keys plus an SPS sequence item asking Modality/SPS ID."""
    identifier = Dataset()
    for keyword, value in top.items():
        setattr(identifier, keyword, value)
    step = Dataset()
    step.Modality = ""
    step.ScheduledProcedureStepID = ""
    identifier.ScheduledProcedureStepSequence = [step]
    return identifier


class DelegatingBackend:
    """The store behind a test double: override single operations, observe searches."""

    name = "test-double"

    def __init__(self, inner: LocalBackend) -> None:
        self.inner = inner
        self.search_started = threading.Event()
        self.search_closed = threading.Event()

    async def search_worklist(self, query: WorklistQuery) -> AsyncIterator[JsonDataset]:
        self.search_started.set()
        try:
            async with aclosing(self.results(query)) as results:
                async for item in results:
                    yield item
        finally:
            self.search_closed.set()

    def results(self, query: WorklistQuery) -> AsyncGenerator[JsonDataset, None]:
        """What the search yields (the store's results unless overridden)."""
        return self.inner.search_worklist(query)

    async def create_mpps(self, uid: str, attributes: JsonDataset) -> MppsResult:
        return await self.inner.create_mpps(uid, attributes)

    async def update_mpps(self, uid: str, changes: JsonDataset) -> MppsResult:
        return await self.inner.update_mpps(uid, changes)

    async def retrieve_mpps(self, uid: str, tags: Sequence[int] | None = None) -> MppsResult:
        return await self.inner.retrieve_mpps(uid, tags)

    async def check_ready(self) -> None:
        await self.inner.check_ready()

    async def aclose(self) -> None:
        """The harness closes the store itself."""
