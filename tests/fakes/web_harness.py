"""Test harness for the DICOMweb front: a real server on loopback and a recording client.

:class:`WebGateway` runs :func:`gateway.web.create_web_app` through the real aiohttp
``AppRunner`` on 127.0.0.1 port 0 and talks to it with a real ``ClientSession``. Every
reply it returns has already passed :func:`assert_model_identity` (DICOM JSON -> XML ->
JSON is the identity for every dataset in the body, Status Reports included).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from gateway.backends.base import Backend
from gateway.model.dicom_xml import json_to_xml, xml_to_json
from gateway.model.types import JsonDataset
from gateway.settings import Settings, WebSettings
from gateway.web import create_web_app, start_site

SPS = "modality-scheduled-procedure-steps"
MPPS = "modality-performed-procedure-steps"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
OMIT = "\x00omit"  # a header value meaning "send no such header at all"


# --- payload helpers ---------------------------------------------------------------------


def _media(content_type: str | None) -> tuple[str, dict[str, str]]:
    if not content_type:
        return "", {}
    essence, *params = content_type.split(";")
    out: dict[str, str] = {}
    for param in params:
        name, _, value = param.strip().partition("=")
        out[name.lower()] = value.strip('"')
    return essence.strip().lower(), out


def split_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """Parts of a multipart/related body: (lower-cased headers, payload)."""
    _, params = _media(content_type)
    boundary = params["boundary"].encode("ascii")
    assert body.startswith(b"--" + boundary + b"\r\n"), "body must start with the boundary"
    assert body.rstrip(b"\r\n").endswith(b"--" + boundary + b"--"), "missing close delimiter"
    parts = []
    for chunk in body.split(b"--" + boundary)[1:-1]:
        chunk = chunk.removeprefix(b"\r\n").removesuffix(b"\r\n")
        head, _, payload = chunk.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("ascii").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        assert int(headers["content-length"]) == len(payload)
        parts.append((headers, payload))
    return parts


def _json_identity(datasets: Any) -> None:
    assert isinstance(datasets, list), "DICOM JSON payloads are arrays"
    for dataset in datasets:
        assert xml_to_json(json_to_xml(dataset)) == dataset, "JSON -> XML -> JSON differs"


def _xml_identity(document: bytes) -> JsonDataset:
    dataset = xml_to_json(document)
    assert xml_to_json(json_to_xml(dataset)) == dataset, "XML -> JSON -> XML -> JSON differs"
    return dataset


def datasets_of(body: bytes, content_type: str | None) -> list[JsonDataset]:
    """Every dataset in a DICOM JSON, DICOM XML or multipart/related body."""
    essence, _ = _media(content_type)
    if essence == DICOM_JSON:
        parsed = json.loads(body)
        _json_identity(parsed)
        return list(parsed)
    if essence == DICOM_XML:
        return [_xml_identity(body)]
    if essence == "multipart/related":
        out: list[JsonDataset] = []
        for headers, payload in split_multipart(body, content_type or ""):
            out.extend(datasets_of(payload, headers["content-type"]))
        return out
    return []


def assert_model_identity(reply: Reply) -> None:
    """JSON -> XML -> JSON identity for every dataset of a reply (nothing to do if none)."""
    datasets_of(reply.body, reply.headers.get("Content-Type"))


# --- replies -------------------------------------------------------------------------------


@dataclass
class Reply:
    """A fully read response."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def media_type(self) -> str:
        return _media(self.headers.get("Content-Type"))[0]

    @property
    def warnings(self) -> list[str]:
        return list(self.headers.getall("Warning", []))

    def datasets(self) -> list[JsonDataset]:
        return datasets_of(self.body, self.headers.get("Content-Type"))

    def report_text(self) -> str:
        """The human-readable text of a Status Report, whatever its media type."""
        media = self.media_type
        if media in (DICOM_JSON, DICOM_XML):
            (dataset,) = self.datasets()
            return str(dataset["00080418"]["Value"][0])
        if media == "application/json":
            return str(json.loads(self.body)["detail"])
        assert media == "text/plain", f"unexpected Status Report type {media!r}"
        return self.body.decode("utf-8")

    def report_dataset(self) -> JsonDataset:
        (dataset,) = self.datasets()
        return dataset

    def offending(self) -> list[str]:
        """Offending Element (0000,0901) tags of a DICOM Status Report."""
        attribute = self.report_dataset().get("00000901", {})
        return list(attribute.get("Value", []))


# --- the running gateway ----------------------------------------------------------------


class WebGateway:
    """A running front plus a client session; ``request`` returns checked replies."""

    def __init__(self, session: aiohttp.ClientSession, root: str, base_path: str) -> None:
        self.session = session
        self.root = root  # scheme://host:port
        self.base_path = base_path
        self.replies: list[Reply] = []

    @property
    def base(self) -> str:
        return self.root + ("" if self.base_path == "/" else self.base_path)

    @property
    def service(self) -> str:
        """The ``{service}`` of Warning headers."""
        return self.base

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        absolute: bool = False,
        **kwargs: Any,
    ) -> Reply:
        """``path`` is relative to the base (``absolute`` for /health etc.)."""
        url = (self.root if absolute else self.base) + path
        all_headers = {"Accept": DICOM_JSON}
        all_headers.update(headers or {})
        skip = [name for name, value in all_headers.items() if value == OMIT]
        for name in skip:
            del all_headers[name]
        async with self.session.request(
            method,
            url,
            headers=all_headers,
            data=data,
            skip_auto_headers=skip,
            **kwargs,
        ) as response:
            reply = Reply(response.status, response.headers, await response.read())
        assert_model_identity(reply)
        self.replies.append(reply)
        return reply

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("GET", path, **kwargs)

    async def send(
        self,
        method: str,
        path: str,
        dataset: Any,
        *,
        content_type: str = DICOM_JSON,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Reply:
        """Send a dataset body (JSON-encoded unless already bytes/str)."""
        body = dataset if isinstance(dataset, bytes | str) else json.dumps(dataset)
        all_headers = {"Content-Type": content_type, **(headers or {})}
        return await self.request(method, path, headers=all_headers, data=body, **kwargs)

    async def alive(self) -> None:
        """The server still answers a normal request."""
        reply = await self.request("GET", "/health", absolute=True)
        assert reply.status == 200
        search = await self.get(f"/{SPS}?limit=1")
        assert search.status in (200, 204)


@asynccontextmanager
async def running_gateway(
    backend: Backend, settings: Settings | None = None, **web: Any
) -> AsyncIterator[WebGateway]:
    """Serve ``backend`` on a loopback port; ``web`` overrides ``[web]`` settings."""
    settings = settings or Settings()
    if web:
        settings = dataclasses.replace(settings, web=dataclasses.replace(settings.web, **web))
    app = create_web_app(settings, backend)
    runner, port = await start_site(app, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            yield WebGateway(session, f"http://127.0.0.1:{port}", settings.web.base_path)
    finally:
        await runner.cleanup()


# --- worklist items ------------------------------------------------------------------------


def _attr(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def _pn(name: str) -> dict[str, Any]:
    return {"vr": "PN", "Value": [{"Alphabetic": name}]}


def worklist_item(
    n: int,
    *,
    station_name: str = "CTSCANNER",
    station_ae: str = "CTSCANNER",
    date: str = "20250101",
    time: str = "0930",
    modality: str = "CT",
    patient: str = "Doe^Sally",
) -> JsonDataset:
    """One scheduled procedure step with the usual Table K.6-1 attributes."""
    sps = {
        "00080060": _attr("CS", modality),
        "00400001": _attr("AE", station_ae),
        "00400002": _attr("DA", date),
        "00400003": _attr("TM", time),
        "00400006": _attr("PN"),
        "00400007": _attr("LO", "Specials^04a_HeadCTA"),
        "00400009": _attr("SH", f"PS-ID-{n}"),
        "00400010": _attr("SH", station_name),
        "00400011": _attr("SH", "Radiology 1"),
    }
    return {
        "00080050": _attr("SH", f"ACC-{n:04d}"),
        "00080090": _pn("Referrer^Rita"),
        "00100010": _pn(patient),
        "00100020": _attr("LO", f"P-{4700 + n}"),
        "00100030": _attr("DA", "19700101"),
        "00100040": _attr("CS", "F"),
        "0020000D": _attr("UI", f"1.2.250.1.59.40211.3000000809041250108230000000{n}"),
        "00321060": _attr("LO", "CT head"),
        "00400100": {"vr": "SQ", "Value": [sps]},
        "00401001": _attr("SH", f"P-ID-{n}"),
    }


def demo_worklist() -> list[JsonDataset]:
    """Five CT steps on CTSCANNER on 2025-01-01 (09:00..13:00) and one MR step."""
    items = [worklist_item(n, time=f"{8 + n:02d}00") for n in range(1, 6)]
    items.append(
        worklist_item(
            6, station_name="MRSCANNER", station_ae="MRSCANNER", modality="MR", patient="Roe^Ann"
        )
    )
    return items


def updated_web(settings: Settings, **changes: Any) -> Settings:
    """``settings`` with ``[web]`` keys changed."""
    web: WebSettings = dataclasses.replace(settings.web, **changes)
    return dataclasses.replace(settings, web=web)
