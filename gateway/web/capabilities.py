"""Retrieve Capabilities (PS3.18 8.9, Annex H): WADL (default) or JSON, from the route table.

Both forms are generated from the same :class:`gateway.web.context.Route` rows the router
is built from, so the description cannot drift from what the server does. ``OPTIONS`` on
the base describes every resource; on a resource, just that resource.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from xml.etree import ElementTree as ET

from aiohttp import web

from gateway.model.status import HttpStatus
from gateway.web.context import Call, Route, Transaction
from gateway.web.negotiation import (
    PLAIN_JSON,
    SUPPORTED_CHARSETS,
    WADL,
)

WADL_NS = "http://wadl.dev.java.net/2009/02"
ROLE = "origin-server"
_WITH_BODY = frozenset({Transaction.SEARCH, Transaction.RETRIEVE, Transaction.CAPABILITIES})
_REPORT_TYPES = ("application/dicom+json", "application/dicom+xml", PLAIN_JSON, "text/plain")
_FEATURES_DOC = (
    "Role: origin server of the Modality Scheduled Procedure Step (PS3.18 ch. 14) and "
    "Modality Performed Procedure Step (ch. 15) services. Character sets: UTF-8. "
    "Fuzzy, empty-value and multiple-value matching are not performed (a Warning says so). "
    "Failure responses carry a Status Report in the negotiated type."
)


def _selected(routes: Sequence[Route], path: str) -> list[Route]:
    """Rows described for an OPTIONS on ``path`` (all rows for the base)."""
    if not path:
        return list(routes)
    return [r for r in routes if r.path == path]


def _paths(routes: Sequence[Route]) -> list[str]:
    seen: dict[str, None] = {}
    for route in routes:
        seen.setdefault(route.path, None)
    return list(seen)


def _template_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def describe(routes: Sequence[Route], base: str, *, limits: dict[str, int]) -> dict[str, object]:
    """The JSON form of the capabilities description."""
    resources = []
    for path in _paths(routes):
        methods = []
        for route in (r for r in routes if r.path == path):
            params = [{"name": route.flag, "required": True}] if route.flag else []
            params += [
                {"name": p.name, "repeating": p.repeating, "doc": p.doc} for p in route.params
            ]
            methods.append(
                {
                    "id": route.id,
                    "name": route.method,
                    "transaction": route.transaction.value,
                    "normative": route.normative,
                    "queryParameters": params,
                    "requestMediaTypes": list(route.request_types),
                    "responseMediaTypes": list(route.response_types),
                    "success": [int(s) for s in route.success],
                    "failure": [int(s) for s in route.failures],
                    "doc": route.doc,
                }
            )
        resources.append(
            {"path": path or "/", "templateParameters": _template_params(path), "methods": methods}
        )
    return {
        "base": base,
        "role": ROLE,
        "charsets": list(SUPPORTED_CHARSETS),
        "statusReportMediaTypes": list(_REPORT_TYPES),
        "features": {
            "fuzzymatching": False,
            "emptyvaluematching": False,
            "multiplevaluematching": False,
            **limits,
        },
        "doc": _FEATURES_DOC,
        "resources": resources,
    }


def wadl(routes: Sequence[Route], base: str, *, limits: dict[str, int]) -> bytes:
    """The WADL form (Annex H): one ``resources`` element whose base is the service URL."""
    ET.register_namespace("", WADL_NS)

    def el(parent: ET.Element, tag: str, **attrs: str) -> ET.Element:
        return ET.SubElement(parent, f"{{{WADL_NS}}}{tag}", attrs)

    root = ET.Element(f"{{{WADL_NS}}}application")
    limit_text = ", ".join(f"{k}={v}" for k, v in limits.items())
    el(root, "doc", title="modality-gateway").text = f"{_FEATURES_DOC} Limits: {limit_text}."
    resources = el(root, "resources", base=base)
    for path in _paths(routes):
        resource = el(resources, "resource", path=path or "/")
        for name in _template_params(path):
            el(resource, "param", name=name, style="template", type="xsd:string", required="true")
        for route in (r for r in routes if r.path == path):
            _wadl_method(resource, route, el)
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document


def _wadl_method(resource: ET.Element, route: Route, el: Callable[..., ET.Element]) -> None:
    method = el(resource, "method", name=route.method, id=route.id)
    spelling = "normative" if route.normative else "non-normative spelling, accepted for drafts"
    el(method, "doc").text = f"{route.transaction.value} ({spelling}). {route.doc}".strip()
    request = el(method, "request")
    if route.flag:
        el(request, "param", name=route.flag, style="query", required="true")
    for param in route.params:
        attrs = {"name": param.name, "style": "query"}
        if param.repeating:
            attrs["repeating"] = "true"
        el(el(request, "param", **attrs), "doc").text = param.doc
    for media in route.request_types:
        el(request, "representation", mediaType=media)
    ok = el(method, "response", status=" ".join(str(int(s)) for s in route.success))
    if route.transaction in _WITH_BODY:
        for media in route.response_types:
            el(ok, "representation", mediaType=media)
    if route.failures:
        failed = el(method, "response", status=" ".join(str(int(s)) for s in route.failures))
        for media in _REPORT_TYPES:
            el(failed, "representation", mediaType=media)


async def capabilities(call: Call) -> web.StreamResponse:
    """``OPTIONS`` on the base or a resource: the description, with ``Allow``."""
    routes = _selected(call.ctx.routes, call.route.path)
    base = call.service + "/"
    limits = {
        "maxSearchLimit": call.ctx.web.max_search_limit,
        "maxBodyBytes": call.ctx.web.max_body_bytes,
    }
    media = call.choice.media_type if call.choice else WADL
    if media == PLAIN_JSON:
        body = json.dumps(describe(routes, base, limits=limits), indent=2).encode("utf-8")
    else:
        body = wadl(routes, base, limits=limits)
    response = web.Response(status=int(HttpStatus.OK), body=body)
    response.headers["Content-Type"] = f"{media}; charset=utf-8"
    allowed = sorted({r.method for r in call.ctx.routes if r.path == call.route.path})
    response.headers["Allow"] = ", ".join(allowed)
    return response
