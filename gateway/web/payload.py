"""Reading an MPPS request body: media type (415), size (413), one dataset (400).

The size limit is enforced twice: from ``Content-Length`` before reading, and by aiohttp's
``client_max_size`` while reading (chunked or compressed bodies). Depth and shape limits of
JSON live in :func:`gateway.model.dicom_json.parse_json_body`; XML is parsed by
:func:`gateway.model.dicom_xml.xml_to_json` without DTDs or entity expansion.
"""

from __future__ import annotations

import functools

from aiohttp import web

from gateway.errors import InvalidPayload, PayloadTooLarge
from gateway.model import dicom_json, dicom_xml
from gateway.model.types import JsonDataset
from gateway.web.negotiation import BodyType, classify_body, is_utf8


@functools.lru_cache(maxsize=32)
def _body_type(content_type: str | None) -> BodyType:
    """:func:`classify_body`, remembered: a modality sends the same header every time, and
    parsing it was a measurable part of a queued write (a refusal raises, not cached)."""
    return classify_body(content_type)


async def read_dataset(request: web.Request, max_bytes: int) -> JsonDataset:
    """The one dataset of a Create/Update body (a bare object or a one-element array)."""
    body_type = _body_type(request.headers.get("Content-Type"))
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(f"request body of {length} bytes exceeds the limit of {max_bytes}")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"request body exceeds the limit of {max_bytes} bytes") from None
    if not body.strip():
        raise InvalidPayload("the request body is empty")
    if body_type.kind == "xml":
        return dicom_xml.xml_to_json(body)
    if body_type.charset is not None and not is_utf8(body_type.charset):
        try:
            body = body.decode(body_type.charset).encode("utf-8")
        except UnicodeError:
            raise InvalidPayload(f"body is not valid {body_type.charset}") from None
    datasets = dicom_json.parse_json_body(body)
    if len(datasets) != 1:
        raise InvalidPayload(
            f"the body must hold exactly one dataset (an object or a one-element array), "
            f"not {len(datasets)}"
        )
    return datasets[0]
