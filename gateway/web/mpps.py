"""Create, Update and Retrieve of Modality Performed Procedure Steps (PS3.18 15.4-15.6).

Every spelling clients were built on reaches these three handlers (see the route table):
the normative ``POST {uid}`` / ``POST {uid}?update``, and the drafts' ``PUT`` (Create),
``PATCH`` and ``POST {uid}/update`` (Update), which are logged as non-normative. Writes are
shielded from client disconnects: once a write reached the backend it runs to its end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

from aiohttp import web
from pydicom.datadict import dictionary_VR

from gateway.backends.base import MppsResult
from gateway.errors import BadQuery
from gateway.model.mwl_keys import parse_attribute_id
from gateway.model.status import HttpStatus
from gateway.model.types import JsonDataset, TagPath, tag_key
from gateway.model.uids import validate_uid
from gateway.web.context import Call
from gateway.web.negotiation import DICOM_JSON, Choice
from gateway.web.payload import read_dataset
from gateway.web.responses import add_warnings, dataset_response

MPPS_RESOURCE = "modality-performed-procedure-steps"


def _checked_uid(call: Call) -> str:
    """The ``{uid}`` path segment, validated (PS3.5 9.1) before anything else happens."""
    uid = call.request.match_info.get("uid", "")
    validate_uid(uid)
    call.log_fields["uid"] = uid
    if not call.route.normative:
        call.ctx.log.warning("non-normative MPPS request form", form=call.route.spelling, uid=uid)
    return uid


async def _run_to_end(call: Call, write: Awaitable[MppsResult]) -> MppsResult:
    """Await a backend write that a client disconnect must not cut short.

    If this handler is cancelled the write still finishes; its outcome is then only
    logged (by kind), so no exception is left unretrieved.
    """
    task = asyncio.ensure_future(write)

    def _orphaned(done: asyncio.Future[MppsResult]) -> None:
        if not done.cancelled() and done.exception() is not None and call.request.transport is None:
            call.ctx.log.info("write finished after the client left", **call.log_fields)

    task.add_done_callback(_orphaned)
    return await asyncio.shield(task)


def _check_update_flag(call: Call) -> None:
    """``?update`` is a bare flag; tolerate ``update=true``, refuse other values."""
    for value in call.query_values("update"):
        if value not in ("", "true"):
            raise BadQuery("update: the parameter takes no value")


async def create(call: Call) -> web.StreamResponse:
    """Create (15.4): 201 with ``Location``; 409 if the UID is in use; 400 if invalid."""
    uid = _checked_uid(call)
    dataset = await read_dataset(call.request, call.ctx.web.max_body_bytes)
    result = await _run_to_end(call, call.ctx.backend.create_mpps(uid, dataset))
    response = web.Response(status=int(HttpStatus.CREATED))
    response.headers["Location"] = f"{call.service}/{MPPS_RESOURCE}/{uid}"
    add_warnings(response, call.service, result.warnings)
    return response


async def update(call: Call) -> web.StreamResponse:
    """Update (15.5): 200 without payload; 404 unknown, 409 final/incompatible, 410 gone."""
    uid = _checked_uid(call)
    _check_update_flag(call)
    dataset = await read_dataset(call.request, call.ctx.web.max_body_bytes)
    result = await _run_to_end(call, call.ctx.backend.update_mpps(uid, dataset))
    response = web.Response(status=int(HttpStatus.OK))
    add_warnings(response, call.service, result.warnings)
    return response


async def retrieve(call: Call) -> web.StreamResponse:
    """Retrieve (15.6): 200 with the MPPS (JSON: an array of one object); 404 unknown."""
    uid = _checked_uid(call)
    selection = parse_includefield(call.query_values("includefield"))
    result = await call.ctx.backend.retrieve_mpps(uid, selection.top_level_tags)
    dataset = selection.trim(result.dataset)
    response = dataset_response([dataset], call.choice or Choice(DICOM_JSON))
    add_warnings(response, call.service, result.warnings)
    return response


# --- includefield for Retrieve -----------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """The attributes ``includefield`` asks for; ``paths`` None means all (absent or ``all``).

    The backend is asked for top-level tags only (N-GET cannot address nested attributes,
    F.8.2.1.2); nested paths are trimmed here.
    """

    paths: tuple[TagPath, ...] | None = None

    @property
    def top_level_tags(self) -> list[int] | None:
        if self.paths is None:
            return None
        return sorted({path[0] for path in self.paths})

    def trim(self, dataset: JsonDataset) -> JsonDataset:
        if self.paths is None:
            return dataset
        return _trim(dataset, self.paths)


def _trim(dataset: JsonDataset, paths: Sequence[TagPath]) -> JsonDataset:
    out: JsonDataset = {}
    for tag in sorted({p[0] for p in paths}):
        key = tag_key(tag)
        if key not in dataset:
            continue
        nested = [p[1:] for p in paths if p[0] == tag]
        attribute = dataset[key]
        items = attribute.get("Value") if isinstance(attribute, dict) else None
        if any(not rest for rest in nested) or not isinstance(items, list):
            out[key] = attribute
            continue
        trimmed = [_trim(item, nested) if isinstance(item, dict) else item for item in items]
        out[key] = {**attribute, "Value": trimmed}
    return out


def parse_includefield(values: Sequence[str]) -> Selection:
    """Parse ``includefield`` values (comma lists of tags/keywords/dotted paths, or ``all``).

    Raise :class:`BadQuery` naming ``includefield`` for an empty element, an unknown
    attribute, a path through a non-sequence, or ``all`` next to other attributes.
    """
    if not values:
        return Selection()
    elements = [element.strip() for value in values for element in value.split(",")]
    if "all" in elements:
        if len(elements) != 1:
            raise BadQuery("includefield: 'all' must stand alone")
        return Selection()
    paths: list[TagPath] = []
    for element in elements:
        if not element:
            raise BadQuery("includefield: empty attribute in the list")
        try:
            path = tuple(parse_attribute_id(part) for part in element.split("."))
        except ValueError as exc:
            raise BadQuery(f"includefield: {exc}") from None
        for tag in path[:-1]:
            if _vr_of(tag) != "SQ":
                raise BadQuery(f"includefield: {tag_key(tag)} in {element!r} is not a sequence")
        paths.append(path)
    return Selection(tuple(paths))


def _vr_of(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None
