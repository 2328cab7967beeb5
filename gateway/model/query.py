"""The worklist query: one immutable object for a C-FIND identifier and a DICOMweb Search.

Built with :meth:`WorklistQuery.from_identifier` (DIMSE) or
:meth:`WorklistQuery.from_query_params` (PS3.18 8.3.4) and rendered back to either form,
so both proxy directions share one meaning of a query. Matching follows PS3.4 C.2.2.2 as
used by Annex K (see :mod:`gateway.model.matching`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

from gateway.model.types import JsonDataset, TagPath


@dataclass(frozen=True)
class QueryKey:
    """One key of a query: a path of tags, its VR, and its matching values.

    ``values`` empty means universal matching (a pure return key). A UID list has one
    value per UID; a range keeps its ``-`` form (``"20240101-20240131"``); wildcards keep
    ``*`` and ``?``. A sequence key (VR ``SQ``) has no values; its nested keys are separate
    :class:`QueryKey` objects whose ``path`` starts with the sequence's path.
    """

    path: TagPath
    vr: str
    values: tuple[str, ...] = ()

    @property
    def is_matching(self) -> bool:
        """True when the key constrains results (not universal matching)."""
        return any(v not in ("", "*") for v in self.values) and self.vr != "SQ"


@dataclass(frozen=True)
class WorklistQuery:
    """A Modality Worklist query, protocol-neutral."""

    keys: tuple[QueryKey, ...] = ()
    include_all: bool = False  # DICOMweb includefield=all
    fuzzy: bool = False  # fuzzymatching=true was asked for
    offset: int = 0
    limit: int | None = None
    specific_character_set: str | None = None  # as sent by a DIMSE SCU

    @classmethod
    def from_identifier(cls, identifier: Dataset) -> WorklistQuery:
        """Build from a C-FIND identifier; raise :class:`gateway.errors.BadQuery`."""
        raise NotImplementedError

    @classmethod
    def from_query_params(
        cls, params: Sequence[tuple[str, str]], *, max_limit: int | None = None
    ) -> WorklistQuery:
        """Build from DICOMweb query parameters (name, value) in request order.

        Raise :class:`gateway.errors.BadQuery` naming the parameter for a supported
        parameter with an invalid value; unknown parameters are ignored.
        """
        raise NotImplementedError

    def to_identifier(self) -> Dataset:
        """Render as a C-FIND identifier (matching values plus zero-length return keys)."""
        raise NotImplementedError

    def to_query_params(self) -> list[tuple[str, str]]:
        """Render as DICOMweb match parameters plus ``includefield``/``offset``/``limit``."""
        raise NotImplementedError

    def with_return_keys(self, paths: Iterable[TagPath]) -> WorklistQuery:
        """A copy that also asks for ``paths`` as return keys (no duplicates)."""
        raise NotImplementedError

    def matches(self, item: JsonDataset, *, case_insensitive_pn: bool = False) -> bool:
        """True when ``item`` satisfies every matching key (PS3.4 C.2.2.2, K.2.2.1.1.1)."""
        raise NotImplementedError

    def project(self, item: JsonDataset) -> JsonDataset:
        """``item`` trimmed to exactly this query's return keys (C-FIND response rules).

        A requested key the item lacks is returned zero-length; sequence keys keep only the
        requested nested keys; a sequence asked for without nested keys is returned whole.
        Specific Character Set is not added here (fronts handle encoding).
        """
        raise NotImplementedError
