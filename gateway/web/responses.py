"""Response bodies of the DICOMweb front: datasets, Status Reports, Warning headers.

A Status Report (PS3.18 8.6.3) is rendered in the negotiated type, following
``status-mapping.md`` §6:

* DICOM types: one dataset (a JSON array of one object, or one XML document) holding
  Status (0000,0900, the DIMSE twin of the failure), Offending Element (0000,0901), Error
  Comment (0000,0902, at most 64 ASCII characters), Error ID (0000,0903) and the full text
  in Transaction Status Comment (0008,0418);
* ``application/json``: the §6 object (httpStatus, dimseStatus, errorId, ...);
* ``text/plain`` otherwise, including when the request offered nothing usable.

HTTP statuses for errors come only from :func:`gateway.model.status.http_status`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus

from aiohttp import web
from pydicom.datadict import keyword_for_tag

from gateway.errors import GatewayError
from gateway.model import dicom_json, dicom_xml
from gateway.model.status import DimseFailure, HttpStatus, Operation, dimse_failure, http_status
from gateway.model.types import JsonDataset, tag_key
from gateway.web.negotiation import (
    DICOM_JSON,
    DICOM_XML,
    MULTIPART_JSON,
    MULTIPART_XML,
    PLAIN_JSON,
    TEXT_PLAIN,
    Choice,
    select_media_type,
)

FUZZY_NOT_SUPPORTED = (
    "The fuzzymatching parameter is not supported. Only literal matching has been performed."
)
EMPTY_VALUE_NOT_SUPPORTED = (
    "The emptyvaluematching parameter is not supported. "
    "Empty Value Matching has not been performed."
)
MULTIPLE_VALUE_NOT_SUPPORTED = (
    "The multiplevaluematching parameter is not supported. "
    "Multiple Value Matching has not been performed."
)


def remaining_text(remaining: int | None) -> str:
    """The text of PS3.18 8.3.4.4.1 for matches not yet returned.

    ``None``: more matches exist but the search stopped early (upstream backends), so the
    count is unknown and left out rather than invented.
    """
    if remaining is None:
        return "There are additional results that can be requested"
    return f"There are {remaining} additional results that can be requested"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def add_warnings(response: web.StreamResponse, service: str, texts: Iterable[str]) -> None:
    """Add one ``Warning: 299 {service}: {text}`` header per text (RFC 7234 §5.5)."""
    for text in texts:
        clean = _CONTROL.sub(" ", text).strip()
        if clean:
            response.headers.add("Warning", f"299 {service}: {clean}")


# --- Status Reports --------------------------------------------------------------------


@dataclass(frozen=True)
class StatusReport:
    """What went wrong, independent of how it is rendered."""

    status: HttpStatus
    detail: str
    dimse: DimseFailure | None = None
    available: tuple[str, ...] = ()  # 406/415: the types we do support
    allow: tuple[str, ...] = ()  # 405: the methods the resource has
    retry_after_s: int | None = None

    @classmethod
    def from_error(cls, error: GatewayError, operation: Operation, *, strict: bool) -> StatusReport:
        """The report for a gateway error raised during ``operation``."""
        detail = error.message
        if error.upstream_detail:
            detail = f"{detail} ({error.upstream_detail})"
        return cls(
            status=http_status(error, operation, strict=strict),
            detail=detail,
            dimse=dimse_failure(error, operation),
            retry_after_s=error.retry_after_s,
        )

    @property
    def offending(self) -> tuple[int, ...]:
        return self.dimse.offending if self.dimse else ()

    @property
    def reason(self) -> str:
        return HTTPStatus(int(self.status)).phrase

    @property
    def comment(self) -> str:
        """An Error Comment (LO): ASCII, at most 64 characters."""
        text = self.dimse.error_comment if self.dimse else self.reason
        return text.encode("ascii", "replace").decode("ascii").replace("\\", "/")[:64]

    def text(self) -> str:
        """The full human-readable description."""
        detail = self.detail.rstrip()
        if detail and detail[-1] not in ".!?":
            detail += "."
        parts = [f"{int(self.status)} {self.reason}: {detail}"]
        named = [t for t in self.offending if not _named_in(t, detail)]
        if named:
            names = ", ".join(_describe_tag(t) for t in named)
            parts.append(f"Offending attributes: {names}.")
        if self.available:
            parts.append(f"Supported: {', '.join(self.available)}.")
        if self.allow:
            parts.append(f"Allowed methods: {', '.join(self.allow)}.")
        return " ".join(parts)

    def dataset(self) -> JsonDataset:
        """The report as a DICOM JSON dataset (keys in ascending tag order)."""
        ds: JsonDataset = {}
        if self.dimse is not None:
            ds["00000900"] = {"vr": "US", "Value": [int(self.dimse.status)]}
        if self.offending:
            ds["00000901"] = {"vr": "AT", "Value": [tag_key(t) for t in self.offending]}
        ds["00000902"] = {"vr": "LO", "Value": [self.comment]}
        if self.dimse is not None and self.dimse.error_id is not None:
            ds["00000903"] = {"vr": "US", "Value": [int(self.dimse.error_id)]}
        ds["00080418"] = {"vr": "LT", "Value": [self.text()]}
        return ds

    def json_object(self) -> dict[str, object]:
        """The ``application/json`` form proposed in status-mapping.md §6."""
        obj: dict[str, object] = {"httpStatus": int(self.status)}
        if self.dimse is not None:
            obj["dimseStatus"] = f"{int(self.dimse.status):04X}"
            if self.dimse.error_id is not None:
                obj["errorId"] = f"{int(self.dimse.error_id):04X}"
        obj["errorComment"] = self.comment
        if self.offending:
            obj["offendingElements"] = [tag_key(t) for t in self.offending]
        obj["detail"] = self.text()
        return obj


def _named_in(tag: int, text: str) -> bool:
    """True when ``text`` already names ``tag`` (by keyword, 8-hex or (gggg,eeee))."""
    keyword = keyword_for_tag(tag)
    forms = [tag_key(tag), f"({tag >> 16:04X},{tag & 0xFFFF:04X})"] + ([keyword] if keyword else [])
    return any(form in text for form in forms)


def _describe_tag(tag: int) -> str:
    keyword = keyword_for_tag(tag)
    hexa = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    return f"{hexa} {keyword}" if keyword else hexa


_REPORT_OFFERS = (DICOM_JSON, DICOM_XML, MULTIPART_XML, MULTIPART_JSON, PLAIN_JSON, TEXT_PLAIN)
_SINGLE_PART = {MULTIPART_XML: DICOM_XML, MULTIPART_JSON: DICOM_JSON}


def report_media_type(accept: str | None, negotiated: Choice | None) -> str:
    """The type of a Status Report: the negotiated one, else the best the client accepts."""
    if negotiated is not None:
        media = _SINGLE_PART.get(negotiated.media_type, negotiated.media_type)
        if media in (DICOM_JSON, DICOM_XML, PLAIN_JSON):
            return media
        return TEXT_PLAIN
    if accept is None:
        return TEXT_PLAIN
    try:
        chosen = select_media_type(accept, (), _REPORT_OFFERS).media_type
    except Exception:  # any negotiation problem: fall back to text
        return TEXT_PLAIN
    return _SINGLE_PART.get(chosen, chosen)


def report_response(report: StatusReport, media_type: str) -> web.Response:
    """Render ``report`` as a complete response in ``media_type`` (text on any failure)."""
    try:
        body, content_type = _render_report(report, media_type)
    except Exception:  # a broken serializer must not hide the report
        body, content_type = _render_report(report, TEXT_PLAIN)
    response = web.Response(status=int(report.status), body=body)
    response.headers["Content-Type"] = content_type
    if report.allow:
        response.headers["Allow"] = ", ".join(report.allow)
    if report.retry_after_s is not None:
        response.headers["Retry-After"] = str(report.retry_after_s)
    return response


def _render_report(report: StatusReport, media_type: str) -> tuple[bytes, str]:
    if media_type == DICOM_JSON:
        return dicom_json.dumps_json([report.dataset()]), f"{DICOM_JSON}; charset=utf-8"
    if media_type == DICOM_XML:
        return dicom_xml.json_to_xml(report.dataset()), f"{DICOM_XML}; charset=utf-8"
    if media_type == PLAIN_JSON:
        body = json.dumps(report.json_object(), ensure_ascii=False).encode("utf-8")
        return body, f"{PLAIN_JSON}; charset=utf-8"
    return (report.text() + "\n").encode("utf-8"), f"{TEXT_PLAIN}; charset=utf-8"


# --- dataset payloads ------------------------------------------------------------------


def dataset_response(
    datasets: Sequence[JsonDataset], choice: Choice, *, status: HttpStatus = HttpStatus.OK
) -> web.Response:
    """Datasets in the negotiated type.

    JSON is one array. ``application/dicom+xml`` is one document when there is exactly
    one dataset and multipart/related XML otherwise (a collection has no single-part XML
    form, PS3.18 10.4.4). Multipart JSON is one part holding the whole array.
    """
    media = choice.media_type
    if media == DICOM_JSON:
        return _response(
            status, dicom_json.dumps_json(list(datasets)), f"{DICOM_JSON}; charset=utf-8"
        )
    if media == DICOM_XML and len(datasets) == 1:
        return _response(status, dicom_xml.json_to_xml(datasets[0]), f"{DICOM_XML}; charset=utf-8")
    if media == MULTIPART_JSON:
        parts = [dicom_json.dumps_json(list(datasets))]
        return _multipart(status, DICOM_JSON, parts)
    parts = [dicom_xml.json_to_xml(ds) for ds in datasets]
    return _multipart(status, DICOM_XML, parts)


def _response(status: HttpStatus, body: bytes, content_type: str) -> web.Response:
    response = web.Response(status=int(status), body=body)
    response.headers["Content-Type"] = content_type
    return response


def _multipart(status: HttpStatus, root: str, parts: Sequence[bytes]) -> web.Response:
    """A multipart/related payload (PS3.18 8.6.1.2): Content-Type and length per part."""
    boundary = f"dicomweb-{uuid.uuid4().hex}"
    chunks: list[bytes] = []
    for part in parts:
        chunks.append(f"--{boundary}\r\n".encode("ascii"))
        chunks.append(f"Content-Type: {root}; charset=utf-8\r\n".encode("ascii"))
        chunks.append(f"Content-Length: {len(part)}\r\n\r\n".encode("ascii"))
        chunks.append(part)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode("ascii"))
    content_type = f'multipart/related; type="{root}"; boundary={boundary}'
    return _response(status, b"".join(chunks), content_type)
