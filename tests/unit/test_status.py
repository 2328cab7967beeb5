"""The one status table: every error kind maps for every operation, with the standard codes."""

from __future__ import annotations

import pytest

from gateway import errors
from gateway.errors import ErrorKind
from gateway.model.status import (
    MPPS_FINAL_COMMENT,
    STATUS_TABLE,
    DimseStatus,
    ErrorId,
    HttpStatus,
    Operation,
    dimse_failure,
    http_status,
    is_dimse_success,
    kind_for_dimse_status,
    kind_for_http_status,
)


def test_table_is_total() -> None:
    assert {(k, o) for k in ErrorKind for o in Operation} == set(STATUS_TABLE)


@pytest.mark.parametrize(
    ("error", "op", "dimse", "http"),
    [
        (errors.DuplicateInstance("dup"), Operation.CREATE, 0x0111, 409),
        (errors.NoSuchInstance("x"), Operation.UPDATE, 0x0112, 404),
        (errors.InstanceGone("x"), Operation.UPDATE, 0x0112, 410),
        (errors.FinalStateViolation("x"), Operation.UPDATE, 0x0110, 409),
        (errors.InvalidAttributeValue("x"), Operation.CREATE, 0x0106, 400),
        (errors.MissingAttribute("x"), Operation.CREATE, 0x0120, 400),
        (errors.MissingAttributeValue("x"), Operation.CREATE, 0x0121, 400),
        (errors.BadQuery("x"), Operation.FIND, 0xA900, 400),
        (errors.UpstreamUnavailable("x"), Operation.FIND, 0xA700, 503),
        (errors.UpstreamUnavailable("x"), Operation.CREATE, 0x0213, 503),
        (errors.UpstreamTimeout("x"), Operation.CREATE, 0x0110, 504),
        (errors.UpstreamTimeout("x"), Operation.RETRIEVE, 0x0213, 504),
        (errors.UpstreamRefused("x"), Operation.UPDATE, 0x0124, 502),
        (errors.InternalError("x"), Operation.FIND, 0xC000, 500),
        (errors.NotSupported("x"), Operation.FIND, 0x0122, 501),
    ],
)
def test_standard_pairs(error: errors.GatewayError, op: Operation, dimse: int, http: int) -> None:
    assert dimse_failure(error, op).status == dimse
    assert http_status(error, op) == http


def test_final_state_carries_error_id_and_comment() -> None:
    failure = dimse_failure(errors.FinalStateViolation("final"), Operation.UPDATE)
    assert failure.error_id == ErrorId.MPPS_MAY_NO_LONGER_BE_UPDATED == 0xA710
    assert failure.error_comment == MPPS_FINAL_COMMENT


def test_error_comment_is_short_ascii() -> None:
    error = errors.UpstreamFailure("Überweisung fehlgeschlagen " * 5, upstream_detail="HTTP 500")
    comment = dimse_failure(error, Operation.CREATE).error_comment
    assert len(comment) <= 64
    assert comment.isascii()


def test_offending_tags_pass_through() -> None:
    error = errors.MissingAttribute("missing", offending=[0x00400252, 0x00100010])
    assert dimse_failure(error, Operation.CREATE).offending == (0x00400252, 0x00100010)


def test_strict_mode_keeps_to_listed_codes() -> None:
    assert http_status(errors.UpstreamTimeout("t"), Operation.FIND, strict=True) == 503
    assert http_status(errors.UpstreamBadResponse("b"), Operation.FIND, strict=True) == 500
    assert http_status(errors.UpstreamRefused("r"), Operation.FIND, strict=True) == 503
    assert http_status(errors.NoSuchInstance("n"), Operation.RETRIEVE, strict=True) == 404


def test_upstream_statuses_back_to_kinds() -> None:
    assert kind_for_dimse_status(0x0111) is ErrorKind.DUPLICATE_INSTANCE
    assert kind_for_dimse_status(0x0110, error_id=0xA710) is ErrorKind.FINAL_STATE
    assert kind_for_dimse_status(0x0110) is ErrorKind.UPSTREAM_FAILURE
    assert kind_for_dimse_status(0xA700) is ErrorKind.UPSTREAM_UNAVAILABLE
    assert kind_for_http_status(409, Operation.CREATE) is ErrorKind.DUPLICATE_INSTANCE
    assert kind_for_http_status(409, Operation.UPDATE) is ErrorKind.INCOMPATIBLE_UPDATE
    assert kind_for_http_status(404, Operation.FIND) is ErrorKind.NOT_SUPPORTED
    assert kind_for_http_status(410, Operation.UPDATE) is ErrorKind.INSTANCE_GONE
    assert kind_for_http_status(503, Operation.CREATE) is ErrorKind.UPSTREAM_UNAVAILABLE
    assert kind_for_http_status(418, Operation.CREATE) is ErrorKind.UPSTREAM_FAILURE


def test_dimse_success_classes() -> None:
    assert is_dimse_success(DimseStatus.SUCCESS)
    assert is_dimse_success(DimseStatus.ATTRIBUTE_LIST_ERROR)
    assert is_dimse_success(0xB000)
    assert not is_dimse_success(DimseStatus.PROCESSING_FAILURE)
    assert HttpStatus.CONFLICT == 409


def test_docs_show_the_current_table() -> None:
    from pathlib import Path

    from gateway.model.status import render_markdown_table

    doc = Path(__file__).resolve().parents[2] / "docs" / "status-mapping.md"
    assert render_markdown_table() in doc.read_text(), "regenerate docs/status-mapping.md"
