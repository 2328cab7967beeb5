"""The worklist query: one immutable object for a C-FIND identifier and a DICOMweb Search.

Built with :meth:`WorklistQuery.from_identifier` (DIMSE) or
:meth:`WorklistQuery.from_query_params` (PS3.18 8.3.4) and rendered back to either form,
so both proxy directions share one meaning of a query. Matching follows PS3.4 C.2.2.2 as
used by Annex K (see :mod:`gateway.model.matching`).

Canonical form: keys are sorted by path, every nested key has its parent sequence key, a
``*`` on a VR without wild card matching is stored as universal (no values) and values lose
their insignificant padding; so equal queries compare equal whichever way they were built.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from typing import Any

from pydicom import config as pydicom_config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

from gateway.errors import BadQuery
from gateway.model import json_shape, matching, mwl_keys
from gateway.model.types import JsonDataset, TagPath, tag_key

_BOOL_PARAMS = ("fuzzymatching", "emptyvaluematching", "multiplevaluematching")
_INT_PARAMS = ("offset", "limit")
_HEX8 = re.compile(r"[0-9A-Fa-f]{8}")
_DIGITS = re.compile(r"[0-9]+")
# K.6-1a attributes are "never sent empty": not filled in as zero-length by project().
_NEVER_EMPTY = frozenset({(mwl_keys.TIMEZONE_OFFSET_FROM_UTC,), (0x0040A390,)})


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

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", tuple(self.path))
        object.__setattr__(self, "values", tuple(self.values))

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

    def __post_init__(self) -> None:
        """Bring ``keys`` into canonical order and add missing parent sequence keys."""
        by_path: dict[TagPath, QueryKey] = {}
        for key in self.keys:
            if not key.path:
                raise ValueError("a query key needs a non-empty path")
            if by_path.setdefault(key.path, key) != key:
                raise ValueError(f"two different keys for {mwl_keys.describe_path(key.path)}")
        for path in list(by_path):
            for depth in range(1, len(path)):
                parent = by_path.setdefault(path[:depth], QueryKey(path[:depth], "SQ"))
                if parent.vr != "SQ":
                    raise ValueError(f"{mwl_keys.describe_path(parent.path)} is not a sequence")
        object.__setattr__(self, "keys", tuple(sorted(by_path.values(), key=_path_of)))
        if self.offset < 0 or (self.limit is not None and self.limit < 1):
            raise ValueError("offset must be >= 0 and limit >= 1")

    def __getstate__(self) -> dict[str, Any]:
        """Pickle/copy the fields only, not the compiled matchers cached on the instance."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # --- construction -------------------------------------------------------------

    @classmethod
    def from_identifier(cls, identifier: Dataset) -> WorklistQuery:
        """Build from a C-FIND identifier; raise :class:`gateway.errors.BadQuery`.

        Group 0000 (command) elements are skipped; Specific Character Set goes into
        ``specific_character_set``. Binary VRs (OB, UN, ...) cannot be matched and are kept
        as return keys only (K.2.2.1.1.2: unsupported matching keys act as return keys).
        """
        keys: list[QueryKey] = []
        charset: str | None = None
        stack: list[tuple[Dataset, TagPath]] = [(identifier, ())]
        while stack:
            dataset, parent = stack.pop()
            for elem in dataset:
                tag = int(elem.tag)
                if tag >> 16 in (0x0000, 0x0002):
                    continue
                if tag == mwl_keys.SPECIFIC_CHARACTER_SET:
                    if not parent:
                        values = _element_strings(elem, "CS")
                        charset = "\\".join(values) if any(values) else None
                    continue
                path = (*parent, tag)
                vr = str(elem.VR).split(" or ")[0]
                if vr == "SQ":
                    items = elem.value or ()
                    if len(items) > 1:
                        raise _bad(path, "a sequence key must have zero or one item")
                    keys.append(QueryKey(path, "SQ"))
                    if items:
                        stack.append((items[0], path))
                    continue
                values = () if vr in matching.BINARY_VRS else _element_strings(elem, vr)
                keys.append(QueryKey(path, vr, _checked(path, vr, values, _bad)))
        return cls(keys=tuple(keys), specific_character_set=charset)

    @classmethod
    def from_query_params(
        cls, params: Sequence[tuple[str, str]], *, max_limit: int | None = None
    ) -> WorklistQuery:
        """Build from DICOMweb query parameters (name, value) in request order.

        Raise :class:`gateway.errors.BadQuery` naming the parameter for a supported
        parameter with an invalid value; unknown parameters are ignored.

        A name is taken as an attribute when it starts with an upper-case letter or a
        digit or contains a dot (PS3.6 keywords and tags look like that); other unknown
        names (``accept``, ``charset``, vendor parameters) are ignored. ``limit`` above
        ``max_limit`` is not an error (PS3.18 8.3.4.4: results = min(matches - offset,
        maxResults, limit), the rest is announced by the ``remaining`` Warning): the
        query keeps ``min(limit, max_limit)``, and ``max_limit`` when no limit was sent.
        ``emptyvaluematching``/``multiplevaluematching`` are checked for a valid value
        only; the front decides whether to add their Warning.
        """
        matches: dict[TagPath, QueryKey] = {}
        returns: list[TagPath] = []
        seen: dict[str, str] = {}
        include_all = False
        charset: str | None = None
        for name, value in params:
            if name == "includefield":
                for item in value.split(","):
                    item = item.strip()
                    if item == "all":
                        include_all = True
                    else:
                        returns.append(_param_path(name, item))
            elif name in _BOOL_PARAMS or name in _INT_PARAMS:
                if name in seen:
                    raise BadQuery(f"query parameter {name!r} is given more than once")
                seen[name] = value
            elif _looks_like_attribute(name):
                path = _param_path(name, name)
                if path in matches:
                    raise BadQuery(
                        f"query parameter {name!r}: attribute is given more than once",
                        offending=(path[-1],),
                    )
                if path == (mwl_keys.SPECIFIC_CHARACTER_SET,):
                    charset = value or None
                    continue
                matches[path] = _param_key(name, path, value)
        if include_all and returns:
            raise BadQuery("query parameter 'includefield': 'all' must not be combined")
        flags = {n: _parse_bool(n, seen[n]) for n in _BOOL_PARAMS if n in seen}
        offset = _parse_int("offset", seen["offset"], 0) if "offset" in seen else 0
        limit = _parse_int("limit", seen["limit"], 1) if "limit" in seen else None
        if max_limit is not None:
            limit = max_limit if limit is None else min(limit, max_limit)
        keys = dict(matches)
        for path in returns:
            keys.setdefault(path, QueryKey(path, mwl_keys.lookup(path).vr))
        return cls(
            keys=tuple(keys.values()),
            include_all=include_all,
            fuzzy=flags.get("fuzzymatching", False),
            offset=offset,
            limit=limit,
            specific_character_set=charset,
        )

    # --- rendering ----------------------------------------------------------------

    def to_identifier(self) -> Dataset:
        """Render as a C-FIND identifier (matching values plus zero-length return keys)."""
        root = Dataset()
        if self.specific_character_set:
            charset = self.specific_character_set.split("\\")
            root.add(_element(mwl_keys.SPECIFIC_CHARACTER_SET, "CS", _multi(charset)))
        containers: dict[TagPath, Dataset] = {(): root}
        for key in self.keys:
            parent, tag = containers[key.path[:-1]], key.path[-1]
            if key.vr == "SQ":
                item = Dataset()
                parent.add(_element(tag, "SQ", DicomSequence([item])))
                containers[key.path] = item
            else:
                parent.add(_element(tag, key.vr, _identifier_value(key)))
        return root

    def to_query_params(self) -> list[tuple[str, str]]:
        """Render as DICOMweb match parameters plus ``includefield``/``offset``/``limit``.

        Attributes are written as dotted 8-hex tags. ``specific_character_set`` is not
        rendered: web query values are Unicode, and an upstream might try to match it.
        With ``include_all`` only ``includefield=all`` is sent (it must stand alone).
        """
        params: list[tuple[str, str]] = []
        includes: list[str] = []
        parents = {k.path[:-1] for k in self.keys}
        for key in self.keys:
            if key.vr == "SQ":
                if key.path not in parents:
                    includes.append(mwl_keys.path_to_tags(key.path))
            elif key.values:
                params.append((mwl_keys.path_to_tags(key.path), ",".join(key.values)))
            else:
                includes.append(mwl_keys.path_to_tags(key.path))
        if self.include_all:
            params.append(("includefield", "all"))
        elif includes:
            params.append(("includefield", ",".join(includes)))
        if self.fuzzy:
            params.append(("fuzzymatching", "true"))
        if self.offset:
            params.append(("offset", str(self.offset)))
        if self.limit is not None:
            params.append(("limit", str(self.limit)))
        return params

    # --- derived queries and evaluation -------------------------------------------

    def with_return_keys(self, paths: Iterable[TagPath]) -> WorklistQuery:
        """A copy that also asks for ``paths`` as return keys (no duplicates).

        Paths inside a sequence the query already asks for *whole* (a sequence key without
        nested keys) are skipped, so that sequence stays whole. Raise ``KeyError`` for a
        path that is not a known attribute.
        """
        paths = tuple(tuple(path) for path in paths)
        cache = self.__dict__.setdefault("_return_key_variants", {})
        cached = cache.get(paths)
        if cached is None:
            cached = cache[paths] = self._with_return_keys(paths)
        assert isinstance(cached, WorklistQuery)
        return cached

    def _with_return_keys(self, paths: tuple[TagPath, ...]) -> WorklistQuery:
        existing = {k.path for k in self.keys}
        parents = {k.path[:-1] for k in self.keys}
        whole = {k.path for k in self.keys if k.vr == "SQ" and k.path not in parents}
        added: list[QueryKey] = []
        for path in paths:
            if path in existing or any(path[:d] in whole for d in range(1, len(path))):
                continue
            added.append(QueryKey(path, mwl_keys.lookup(path).vr))
            existing.add(path)
        return self if not added else replace(self, keys=(*self.keys, *added))

    def compiled(self, *, case_insensitive_pn: bool = False) -> matching.CompiledMatcher:
        """The query's matching keys compiled once (cached on this immutable object)."""
        cache_name = "_matcher_ci" if case_insensitive_pn else "_matcher"
        cached = self.__dict__.get(cache_name)
        if cached is None:
            cached = matching.CompiledMatcher(self.keys, case_insensitive_pn=case_insensitive_pn)
            self.__dict__[cache_name] = cached
        assert isinstance(cached, matching.CompiledMatcher)
        return cached

    def matches(self, item: JsonDataset, *, case_insensitive_pn: bool = False) -> bool:
        """True when ``item`` satisfies every matching key (PS3.4 C.2.2.2, K.2.2.1.1.1)."""
        return self.compiled(case_insensitive_pn=case_insensitive_pn).matches(item)

    def project(self, item: JsonDataset, *, case_insensitive_pn: bool = False) -> JsonDataset:
        """``item`` trimmed to exactly this query's return keys (C-FIND response rules).

        A requested key the item lacks is returned zero-length; sequence keys keep only the
        requested nested keys; a sequence asked for without nested keys is returned whole.
        Specific Character Set is not added here (fronts handle encoding).

        Sequences with nested matching keys keep only their matching items (C.2.2.2.6).
        With ``include_all`` every attribute of ``item`` is kept. Timezone Offset From UTC
        and HL7 Structured Document Reference Sequence are never added zero-length.

        The result shares element values with ``item`` (copying them was a third of a web
        Search's CPU): results are read-only, every later step builds new objects.
        """
        return _project(item, self._projection_plan(case_insensitive_pn), self.include_all)

    def shape_problem(self, item: Any) -> str | None:
        """What is wrong with the DICOM JSON shape of what :meth:`project` reads from ``item``.

        An upstream result is checked where it will be used: the requested attributes,
        their requested nested attributes, sequences asked for whole at every level, and
        everything with ``include_all``. A malformed attribute the query does not ask for
        is dropped by the projection anyway. A modality asks for ~15 of the ~40 attributes
        an origin must send, which took the check of a 50-result page from 3.4 to 2.0 M
        instructions.
        """
        if self.include_all:
            return json_shape.shape_problem(item)
        return json_shape.shape_problem(item, self._projection_plan(False).shape)

    def _projection_plan(self, case_insensitive_pn: bool) -> _Level:
        """The projection plan, built once (cached on this immutable object)."""
        cache_name = "_plan_ci" if case_insensitive_pn else "_plan"
        plan = self.__dict__.get(cache_name)
        if plan is None:
            filters = self.compiled(case_insensitive_pn=case_insensitive_pn).sequence_filters
            plan = self.__dict__[cache_name] = _plan(self.keys, (), filters)
        assert isinstance(plan, _Level)
        return plan


# --- helpers: parsing ---------------------------------------------------------------


def _path_of(key: QueryKey) -> TagPath:
    return key.path


def _bad(path: TagPath, reason: str) -> BadQuery:
    return BadQuery(f"{mwl_keys.describe_path(path)}: {reason}", offending=(path[-1],))


def _element_strings(elem: DataElement, vr: str) -> tuple[str, ...]:
    """The values of a pydicom element as normalized strings (empty tuple when empty)."""
    raw = elem.value
    if raw is None or raw == "":
        return ()
    items = list(raw) if isinstance(raw, MultiValue | list | tuple) else [raw]
    out: list[str] = []
    for value in items:
        if value is None:
            text = ""
        elif vr == "AT":
            text = f"{int(value):08X}"
        elif isinstance(value, bytes):
            text = value.decode("ascii", "replace")
        else:  # DA/TM/DS/IS keep their text; PersonName's original is undecoded bytes
            original = getattr(value, "original_string", None)
            text = original if isinstance(original, str) and original else str(value)
        out.append(matching.normalize_value(vr, text))
    return tuple(out) if any(out) else ()


def _checked(
    path: TagPath, vr: str, values: tuple[str, ...], error: Callable[[TagPath, str], BadQuery]
) -> tuple[str, ...]:
    """Validate key values per VR; ``error(path, reason)`` builds the BadQuery."""
    if vr not in matching.WILDCARD_VRS and values == ("*",):
        return ()
    if len(values) > 1 and vr != "UI":
        raise error(path, "multiple values are only allowed for List of UID matching")
    for value in values:
        if vr == "UI" and len(values) > 1 and not value:
            raise error(path, "empty UID in a list of UIDs")
        reason = matching.check_key_value(vr, value)
        if reason:
            raise error(path, reason)
    return values


def _looks_like_attribute(name: str) -> bool:
    first = name[:1]
    return first.isupper() or first.isdigit() or "." in name or bool(_HEX8.fullmatch(name))


def _param_path(name: str, text: str) -> TagPath:
    try:
        path = mwl_keys.keyword_to_path(text)
    except ValueError as exc:
        raise BadQuery(f"query parameter {name!r}: {exc}") from None
    return path


def _param_key(name: str, path: TagPath, value: str) -> QueryKey:
    vr = mwl_keys.lookup(path).vr

    def error(_: TagPath, reason: str) -> BadQuery:
        return BadQuery(f"query parameter {name!r}: {reason}", offending=(path[-1],))

    if vr == "SQ":
        if value:
            raise error(path, "a sequence cannot be matched directly; use a dotted path")
        return QueryKey(path, vr)
    if vr in matching.BINARY_VRS or not value:
        return QueryKey(path, vr)
    raw = value.split(",") if vr == "UI" else [value]
    values = tuple(matching.normalize_value(vr, v) for v in raw)
    return QueryKey(path, vr, _checked(path, vr, values if any(values) else (), error))


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise BadQuery(f"query parameter {name!r}: expected 'true' or 'false'")
    return lowered == "true"


def _parse_int(name: str, value: str, minimum: int) -> int:
    if not _DIGITS.fullmatch(value) or int(value) < minimum:
        raise BadQuery(f"query parameter {name!r}: expected an integer >= {minimum}")
    return int(value)


# --- helpers: rendering -------------------------------------------------------------


def _multi(values: Sequence[str]) -> str | list[str]:
    return values[0] if len(values) == 1 else list(values)


def _element(tag: int, vr: str, value: Any) -> DataElement:
    """A pydicom element without value validation (wildcards are not valid CS, etc.)."""
    return DataElement(tag, vr, value, validation_mode=pydicom_config.IGNORE)


def _identifier_value(key: QueryKey) -> Any:
    if not key.values:
        return None if key.vr in matching.NUMERIC_VRS or key.vr == "AT" else ""
    if key.vr in ("FL", "FD"):
        return _multi_any([float(v) for v in key.values])
    if key.vr in matching.INTEGER_VRS and key.vr != "IS":
        return _multi_any([int(Decimal(v)) for v in key.values])
    if key.vr == "AT":
        return _multi_any([int(v, 16) for v in key.values])
    return _multi(key.values)


def _multi_any(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else values


# --- helpers: projection ------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    """How to project one requested attribute (precomputed once per query)."""

    key: str  # JSON tag key
    vr: str
    children: _Level | None  # requested nested keys (None: the whole value)
    item_filter: matching.ItemMatcher | None  # keep only matching sequence items
    nested: bool = field(init=False)
    """True when a sequence value must be rebuilt item by item (a field, not a property:
    it is read for every attribute of every result)."""

    def __post_init__(self) -> None:
        nested = self.vr == "SQ" and (self.children is not None or self.item_filter is not None)
        object.__setattr__(self, "nested", nested)


@dataclass(frozen=True)
class _Level:
    """The requested keys of one dataset level, laid out for a fast projection.

    A DICOMweb Search asks for every Type 1/2 key of Table K.6-1, most of them absent
    from a stored item: starting from ``empty`` (their zero-length elements, shared by
    every result) and visiting only the item's own keys is ~4x faster than visiting
    every requested key.
    """

    steps: dict[str, _Step]
    empty: dict[str, JsonDataset]  # zero-length elements to add when the item lacks them
    nested: tuple[_Step, ...]  # steps with children or an item filter
    shape: json_shape.ShapePlan  # what json_shape checks of an upstream result


def _plan(
    keys: Sequence[QueryKey], parent: TagPath, filters: dict[TagPath, matching.ItemMatcher]
) -> _Level:
    depth = len(parent) + 1
    level = [k for k in keys if len(k.path) == depth and k.path[:-1] == parent]
    steps = {
        tag_key(k.path[-1]): _Step(
            key=tag_key(k.path[-1]),
            vr=k.vr,
            children=_plan(keys, k.path, filters) if _has_children(keys, k) else None,
            item_filter=filters.get(k.path),
        )
        for k in level
    }
    empty = {tag_key(k.path[-1]): {"vr": k.vr} for k in level if k.path not in _NEVER_EMPTY}
    nested = tuple(s for s in steps.values() if s.nested)
    shape = {key: None if s.children is None else s.children.shape for key, s in steps.items()}
    return _Level(steps, empty, nested, shape)


def _has_children(keys: Sequence[QueryKey], key: QueryKey) -> bool:
    return key.vr == "SQ" and any(
        len(k.path) == len(key.path) + 1 and k.path[:-1] == key.path for k in keys
    )


def _project(item: JsonDataset, level: _Level, keep_all: bool) -> JsonDataset:
    if keep_all:
        out: JsonDataset = {**level.empty, **item}
        for sequence in level.nested:
            element = item.get(sequence.key)
            if element is not None:
                out[sequence.key] = _project_sequence(element, sequence, keep_all)
        return dict(sorted(out.items()))
    out = dict(level.empty)
    steps = level.steps
    for key, element in item.items():
        step = steps.get(key)
        if step is None:
            continue
        out[key] = _project_sequence(element, step, keep_all) if step.nested else element
    return out


def _project_sequence(element: JsonDataset, step: _Step, keep_all: bool) -> JsonDataset:
    """A sequence element with only the matching items, each trimmed to the nested keys."""
    stored_items = element.get("Value")
    if not stored_items:
        return element
    test = step.item_filter
    children = step.children
    if children is None:
        kept = [it for it in stored_items if isinstance(it, dict) and (test is None or test(it))]
    else:
        kept = [
            _project(it, children, keep_all)
            for it in stored_items
            if isinstance(it, dict) and (test is None or test(it))
        ]
    return {**element, "Value": kept} if kept else {"vr": element.get("vr", "SQ")}
