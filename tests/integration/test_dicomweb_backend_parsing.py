"""The dicomweb backend's pure pieces: the streaming JSON parser and reading origin answers."""

from __future__ import annotations

import json

import pytest

from gateway.backends.dicomweb.backend import _checked, remaining_results, warning_texts
from gateway.backends.dicomweb.client import RetryPolicy
from gateway.backends.dicomweb.jsonstream import JsonArrayParser, parse_array
from gateway.backends.dicomweb.outcomes import (
    UpstreamReport,
    error_for_status,
    parse_retry_after,
    status_report,
)
from gateway.errors import ErrorKind, UpstreamBadResponse
from gateway.model.json_shape import MAX_SEQUENCE_DEPTH, shape_problem
from gateway.model.query import WorklistQuery
from gateway.model.status import DimseStatus, Operation, dimse_failure

ITEMS = [{"00100020": {"vr": "LO", "Value": [f"P{n}"]}, "x": 'ü,]}[{"'} for n in range(5)]


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 10_000])
def test_parser_yields_every_object_whatever_the_chunking(chunk: int) -> None:
    body = json.dumps(ITEMS, ensure_ascii=False, indent=1).encode()
    parser = JsonArrayParser()
    seen = []
    for start in range(0, len(body), chunk):
        seen.extend(parser.feed(body[start : start + chunk]))
    seen.extend(parser.close())
    assert seen == ITEMS


def test_parser_yields_objects_before_the_array_ends() -> None:
    parser = JsonArrayParser()
    assert parser.feed(b'[{"a": 1}, {"b"') == [{"a": 1}]
    assert parser.feed(b": 2}") == [{"b": 2}]
    assert parser.feed(b"]") == []
    assert parser.close() == []


def test_parser_other_charsets() -> None:
    parser = JsonArrayParser(charset="iso-8859-1")
    assert parser.feed('[{"n": "Müller"}]'.encode("latin-1")) == [{"n": "Müller"}]
    parser.close()
    with pytest.raises(ValueError, match="charset"):
        JsonArrayParser(charset="no-such-charset")


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1}',  # an object, not an array
        b"[1, 2]",  # not objects
        b'[{"a": 1} {"b": 2}]',  # missing comma
        b'[{"a": 1}',  # truncated
        b'[{"a": }]',  # broken object
        b"[] []",  # trailing data
        b'[{"a": "\xff"}]',  # not UTF-8
        b"",  # nothing at all
    ],
)
def test_parser_rejects_malformed_bodies(body: bytes) -> None:
    parser = JsonArrayParser()
    with pytest.raises(ValueError):
        parser.feed(body)
        parser.close()
    with pytest.raises(ValueError):
        parse_array(body)  # the whole-body parser refuses the same bodies


def test_whole_body_parser_agrees_with_the_streaming_one() -> None:
    body = json.dumps(ITEMS, ensure_ascii=False, indent=1).encode()
    assert parse_array(body) == ITEMS
    assert parse_array(b"\xef\xbb\xbf" + body) == ITEMS
    assert parse_array(b" [ ] ") == []


def test_parser_limits_one_element() -> None:
    parser = JsonArrayParser(max_item_chars=100)
    with pytest.raises(ValueError, match="too large"):
        parser.feed(b'[{"a": "' + b"x" * 200)


def test_byte_order_mark_is_tolerated() -> None:
    parser = JsonArrayParser()
    assert parser.feed(b"\xef\xbb") == []
    assert parser.feed(b'\xbf[{"a": 1}]') == [{"a": 1}]
    assert parser.close() == []


def test_empty_array() -> None:
    parser = JsonArrayParser()
    assert parser.feed(b" [ ] ") == []
    assert parser.close() == []


# --- Warning headers ---------------------------------------------------------------------


def test_warning_texts_and_remaining_results() -> None:
    headers = [
        "299 http://ris:8080/dicomweb: There are 17 additional results that can be requested",
        '299 ris.example "The fuzzymatching parameter is not supported." "Mon, 01 Jan 2025"',
    ]
    texts = warning_texts(headers)
    assert texts == (
        "There are 17 additional results that can be requested",
        "The fuzzymatching parameter is not supported.",
    )
    assert remaining_results(texts) == 17
    assert remaining_results(texts[1:]) is None


# --- Status Reports ----------------------------------------------------------------------


def test_status_report_forms() -> None:
    assert status_report(b"", "text/plain") == UpstreamReport()
    assert status_report(b"\n  first line  \nsecond", "text/plain").text == "first line"
    html = b"<html><head><title>503 Service Unavailable</title></head><body>x</body></html>"
    assert status_report(html, "text/html").text == "503 Service Unavailable"
    dicom = [
        {
            "00000900": {"vr": "US", "Value": [0x0120]},
            "00000901": {"vr": "AT", "Value": ["00400241"]},
            "00000902": {"vr": "LO", "Value": ["missing Performed Station AE Title"]},
            "00080418": {"vr": "LT", "Value": ["400 Bad Request: long text"]},
        }
    ]
    report = status_report(json.dumps(dicom).encode(), "application/dicom+json")
    assert report == UpstreamReport(
        "missing Performed Station AE Title", (0x00400241,), 0x0120, None
    )
    plain = {"httpStatus": 409, "dimseStatus": "0110", "errorId": "A710", "detail": "final"}
    report = status_report(json.dumps(plain).encode(), "application/json")
    assert report == UpstreamReport("final", (), 0x0110, 0xA710)
    assert len(status_report(b"x" * 5000, "text/plain").text or "") <= 200


def test_error_comment_carries_status_and_report() -> None:
    error = error_for_status(500, Operation.CREATE, body=b"database is locked")
    assert error.kind is ErrorKind.UPSTREAM_FAILURE
    failure = dimse_failure(error, Operation.CREATE)
    assert failure.status is DimseStatus.PROCESSING_FAILURE
    assert failure.error_comment == "HTTP 500: database is locked"
    bare = error_for_status(503, Operation.FIND)
    assert dimse_failure(bare, Operation.FIND).error_comment == "HTTP 503 Service Unavailable"


def test_precise_codes_are_only_taken_from_400_on_mpps() -> None:
    body = json.dumps({"dimseStatus": "0121", "detail": "empty"}).encode()
    assert error_for_status(400, Operation.UPDATE, body=body).kind is (
        ErrorKind.MISSING_ATTRIBUTE_VALUE
    )
    assert error_for_status(400, Operation.FIND, body=body).kind is ErrorKind.BAD_QUERY
    assert error_for_status(500, Operation.UPDATE, body=body).kind is ErrorKind.UPSTREAM_FAILURE


def test_retry_after_and_backoff() -> None:
    assert parse_retry_after("7") == 7
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    assert parse_retry_after("soon") is None
    policy = RetryPolicy(attempts=3, base_delay_s=0.1, max_delay_s=1.0)
    assert [policy.delay(0, None), policy.delay(1, None), policy.delay(2, None)] == [
        0.1,
        0.2,
        None,
    ]
    assert policy.delay(0, 1) == 1.0
    assert policy.delay(0, 30) is None  # a long Retry-After is the caller's to honour


def test_only_utf8_bodies_take_the_whole_page_parser() -> None:
    from gateway.backends.dicomweb.client import _is_utf8

    assert _is_utf8("utf-8") and _is_utf8("UTF8")
    assert not _is_utf8("iso-8859-1")
    assert not _is_utf8("no-such-charset")  # left to the streaming parser's clear error


def _nested(depth: int) -> dict[str, object]:
    item: dict[str, object] = {"00100020": {"vr": "LO", "Value": ["P"]}}
    for _ in range(depth):
        item = {"00400100": {"vr": "SQ", "Value": [item]}}
    return item


_PN = {"vr": "PN", "Value": [{"Alphabetic": "A^B"}]}
_NO_VR = "attribute 00100020 has no VR"
_BAD_KEY = "a key is not 8 upper-case hex digits"
SHAPES: list[tuple[object, str | None]] = [
    ({"00100010": _PN, "00100020": {"vr": "LO"}, "00100030": {"vr": "DA", "Value": None}}, None),
    ({"00091010": {"vr": "LO", "Value": ["private"]}, "00090010": {"vr": "LO"}}, None),
    ({"0010001g": {"vr": "LO"}}, _BAD_KEY),
    ({"00100010": {"vr": "PN"}, "0010abcd": {"vr": "LO"}}, _BAD_KEY),
    ({"00100020": ["LO"]}, _NO_VR),
    ({"00100020": {"Value": ["P"]}}, _NO_VR),
    ({"00100020": {"vr": 5}}, _NO_VR),
    ({"00100020": {"vr": "LO", "Value": "P"}}, "attribute 00100020: Value is not an array"),
    ({"00400100": {"vr": "SQ", "Value": ["not an item"]}}, "a dataset is not a JSON object"),
    (
        {"00400100": {"vr": "SQ", "Value": [{"00080060": {"vr": "CS", "Value": 1}}]}},
        "attribute 00080060: Value is not an array",
    ),
    ({"00400100": {"vr": "SQ", "Value": [{}, {"00080060": {"vr": "CS"}}]}}, None),
    ({"00400100": {"vr": "LO", "Value": ["not a sequence", {"00080060": 1}]}}, None),
    (
        {"00100020": {"vr": "LO"}, "00100030": 7, "0010001x": {"vr": "LO"}},
        "attribute 00100030 has no VR",
    ),
    (_nested(MAX_SEQUENCE_DEPTH), None),
    (_nested(MAX_SEQUENCE_DEPTH + 1), "sequences nested too deeply"),
    (["not", "an", "object"], "a dataset is not a JSON object"),
]


@pytest.mark.parametrize(("item", "problem"), SHAPES)
def test_every_result_is_checked_for_its_shape(item: object, problem: str | None) -> None:
    """With includefield=all the whole result is checked, and the first fault is named."""
    assert shape_problem(item) == problem
    _assert_checked(item, WorklistQuery(include_all=True), problem)


def _assert_checked(item: object, query: WorklistQuery, problem: str | None) -> None:
    if problem is None:
        assert _checked(item, query) is item
    else:
        with pytest.raises(UpstreamBadResponse) as raised:
            _checked(item, query)
        assert raised.value.message == f"unusable answer: {problem}"


_ASKED = WorklistQuery.from_query_params(
    [("PatientID", ""), ("ScheduledProcedureStepSequence.Modality", "CT")]
)
_ASKED_WHOLE = WorklistQuery.from_query_params([("PatientID", ""), ("00400100", "")])
_SPS_ITEM = {"00080060": {"vr": "CS", "Value": ["CT"]}}
PLANNED: list[tuple[WorklistQuery, object, str | None]] = [
    # Not asked for: dropped by the projection, so not the modality's problem.
    (_ASKED, {"00100020": {"vr": "LO"}, "00100010": 7, "0010abcd": {"vr": "LO"}}, None),
    (_ASKED, {"00400100": {"vr": "SQ", "Value": [{**_SPS_ITEM, "00400009": []}]}}, None),
    (_ASKED, {}, None),  # every requested key absent: returned zero-length
    # Asked for: refused, however deep.
    (_ASKED, {"00100020": None}, _NO_VR),
    (_ASKED, {"00100020": {"vr": "LO", "Value": "P"}}, "attribute 00100020: Value is not an array"),
    (
        _ASKED,
        {"00400100": {"vr": "SQ", "Value": [{"00080060": {"vr": "CS", "Value": "CT"}}]}},
        "attribute 00080060: Value is not an array",
    ),
    # Items of a sequence with requested nested keys are projected whatever the VR says.
    (_ASKED, {"00400100": {"vr": "LO", "Value": ["x"]}}, "a dataset is not a JSON object"),
    (_ASKED, _nested(MAX_SEQUENCE_DEPTH + 1), None),  # 00400100 holds no Modality here
    # A sequence asked for whole is returned whole, so all of it is checked.
    (
        _ASKED_WHOLE,
        {"00400100": {"vr": "SQ", "Value": [{**_SPS_ITEM, "00400009": []}]}},
        "attribute 00400009 has no VR",
    ),
    (_ASKED_WHOLE, {"00400100": {"vr": "SQ", "Value": [{"0040x009": {"vr": "SH"}}]}}, _BAD_KEY),
    (_ASKED_WHOLE, _nested(MAX_SEQUENCE_DEPTH + 1), "sequences nested too deeply"),
    (_ASKED_WHOLE, ["not", "an", "object"], "a dataset is not a JSON object"),
]


@pytest.mark.parametrize(("query", "item", "problem"), PLANNED)
def test_a_result_is_checked_where_the_query_uses_it(
    query: WorklistQuery, item: object, problem: str | None
) -> None:
    """Only what the projection reads is checked: requested keys, their items, whole sequences."""
    assert query.shape_problem(item) == problem
    _assert_checked(item, query, problem)
    if problem is None:  # what a front sends on is well-formed: the garbage was left out
        assert isinstance(item, dict)
        assert shape_problem(query.project(item)) is None
