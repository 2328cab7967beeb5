"""A running DIMSE front over a real local store, for tests that speak DIMSE on loopback.

The event loop runs in its own thread (``anyio.from_thread.start_blocking_portal``), as in
the application: the portal created there is the one the front bridges through, and the
tests themselves stay synchronous, like a modality. Use in a test module with::

    pytest_plugins = ("tests.integration.dimse_fixtures",)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association

from gateway.backends.local import LocalBackend
from gateway.dimse import DimseFront
from gateway.dimse.association import MPPS, MPPS_RETRIEVE, VERIFICATION, WORKLIST_FIND
from gateway.model.types import JsonDataset
from gateway.settings import Settings, settings_from_mapping

GATEWAY_AE = "MODALITY_GW"
SCU_AE = "TEST_SCU"
ALL_SOP_CLASSES = (VERIFICATION, WORKLIST_FIND, MPPS, MPPS_RETRIEVE)
TRANSFER_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


@dataclass
class DimseHarness:
    """The front, its backend and the portal they share, plus an SCU helper."""

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
    ) -> Association:
        """A pynetdicom SCU association (established or rejected: check ``is_established``)."""
        ae = AE(ae_title=calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        for uid in sop_classes:
            ae.add_requested_context(uid, list(transfer_syntaxes))
        return ae.associate("127.0.0.1", self.port, ae_title=called_ae)


def dimse_settings(store: Path, **dimse: Any) -> Settings:
    """Validated settings for a loopback front on port 0 (``dimse`` overrides ``[dimse]``)."""
    table: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "ae_title": GATEWAY_AE, **dimse}
    return settings_from_mapping({"dimse": table, "store": {"path": str(store)}})


@contextmanager
def running_dimse(store: Path, **dimse: Any) -> Iterator[DimseHarness]:
    """Start an event loop + portal, open the store, start the front; undo on exit."""
    settings = dimse_settings(store, **dimse)
    with start_blocking_portal() as portal:
        backend = portal.call(LocalBackend.open, settings.store)
        try:
            front = DimseFront(settings, backend, portal)
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
    """Start fronts with ``[dimse]`` overrides, e.g. ``dimse_factory(max_associations=1)``."""
    with ExitStack() as stack:
        count = 0

        def make(**dimse: Any) -> DimseHarness:
            nonlocal count
            count += 1
            store = tmp_path / f"gateway-{count}.sqlite3"
            return stack.enter_context(running_dimse(store, **dimse))

        yield make
