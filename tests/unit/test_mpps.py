"""MPPS rules of PS3.4 Table F.7.2-1: every row for create, update and final state.

The parametrised tests walk the table data itself, so a row added to
:mod:`gateway.model.mpps_table` is tested without touching this file; the example
datasets in :mod:`tests.unit.mpps_examples` hold every path of the table.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.datadict import dictionary_VR, keyword_for_tag

from gateway import errors
from gateway.model import mpps_table as table
from gateway.model.mpps import (
    MPPS_SOP_CLASS_UID,
    PpsStatus,
    apply_update,
    missing_requested,
    referenced_steps,
    select_attributes,
    status_of,
    validate_create,
)
from gateway.model.mpps_table import NOT_ALLOWED, Row, scp_type, scu_type
from gateway.model.status import (
    MPPS_FINAL_COMMENT,
    DimseStatus,
    ErrorId,
    HttpStatus,
    Operation,
    dimse_failure,
    http_status,
)
from gateway.model.types import JsonDataset, TagPath, tag_key
from tests.unit import mpps_examples as ex
from tests.unit.mpps_examples import attr, code, sq

UID = ex.MPPS_UID
STATUS = 0x00400252
PSS = "00400340"

# --- helpers --------------------------------------------------------------------------------


def _items(dataset: JsonDataset, parent: TagPath) -> Iterator[JsonDataset]:
    """Every item at ``parent`` (``()`` = the dataset itself)."""
    if not parent:
        yield dataset
        return
    for item in _items(dataset, parent[:-1]):
        yield from item.get(tag_key(parent[-1]), {}).get("Value", [])


def present(dataset: JsonDataset, path: TagPath) -> bool:
    return any(tag_key(path[-1]) in item for item in _items(dataset, path[:-1]))


def remove(dataset: JsonDataset, path: TagPath) -> JsonDataset:
    """A copy without ``path`` in any item; fails if there was nothing to remove."""
    out = copy.deepcopy(dataset)
    removed = [item.pop(tag_key(path[-1]), None) for item in _items(out, path[:-1])]
    assert any(r is not None for r in removed), f"{path} not in the example"
    return out


def empty(dataset: JsonDataset, path: TagPath) -> JsonDataset:
    """A copy with ``path`` zero length (VR kept) in every item."""
    out = copy.deepcopy(dataset)
    for item in _items(out, path[:-1]):
        key = tag_key(path[-1])
        if key in item:
            item[key] = {"vr": item[key]["vr"]}
    return out


def rows(predicate: Any) -> list[Row]:
    return [row for row in table.ROWS if predicate(row)]


def ids(row: Row) -> str:
    return ">".join(f"{tag:08X}" for tag in row.path)


def created_full() -> JsonDataset:
    return validate_create(UID, ex.full_create())


def assert_error(
    error: errors.GatewayError, op: Operation, dimse: int, http: int, error_id: int | None = None
) -> None:
    failure = dimse_failure(error, op)
    assert failure.status == dimse
    assert failure.error_id == error_id
    assert http_status(error, op) == http
    assert failure.offending == error.offending


# --- the table data -------------------------------------------------------------------------

CELL = re.compile(r"(1|2|3|1C|2C|3C)/(1|2|3|1C|2C|3C)")


def test_table_paths_are_unique_and_named_as_in_the_data_dictionary() -> None:
    assert len(table.BY_PATH) == len(table.ROWS) == 240
    for row in table.ROWS:
        assert keyword_for_tag(row.tag) == row.keyword, ids(row)
        if row.parent:
            assert row.parent in table.BY_PATH, ids(row)
            assert dictionary_VR(row.parent[-1]) == "SQ", ids(row)


def test_table_cells_use_the_standard_notation() -> None:
    for row in table.ROWS:
        assert CELL.fullmatch(row.create), ids(row)
        assert row.set == NOT_ALLOWED or CELL.fullmatch(row.set), ids(row)
        assert row.final in (None, "1", "2"), ids(row)
        if "C" in row.create or "C" in row.set:
            assert row.condition is not None, ids(row)


@pytest.mark.parametrize(
    ("path", "create", "nset", "final"),
    [
        ((0x00400270,), "1/1", NOT_ALLOWED, "1"),
        ((0x00400270, 0x0020000D), "1/1", NOT_ALLOWED, "1"),
        ((0x00400270, 0x00081110), "2/2", NOT_ALLOWED, "2"),
        ((0x00100010,), "2/2", NOT_ALLOWED, "2"),
        ((0x00100024, 0x00400033), "1C/1C", NOT_ALLOWED, "1C"),
        ((0x00400252,), "1/1", "3/1", "1"),
        ((0x00400254,), "2/2", "3/2", "2"),
        ((0x00400250,), "2/2", "3/1", "1"),
        ((0x00400251,), "2/2", "3/1", "1"),
        ((0x00400281,), "3/3", "3/3", "3"),
        ((0x00400340,), "2/2", "3/1", "1"),
        ((0x00400340, 0x00181030), "1/1", "1/1", "1"),
        ((0x00400340, 0x00081050), "2/2", "2/2", "2"),
        ((0x00400340, 0x00081140), "2/2", "2/2", "2"),
        ((0x00400340, 0x00081140, 0x00400560, 0x00400554), "1/1", "1/1", "1"),
        # Code macros: 1a (no N-SET), 1c (mandatory meaning), 1e (optional meaning).
        ((0x00400270, 0x00400008, 0x00080104), "1/1", NOT_ALLOWED, "1"),
        ((0x00400270, 0x00400008, 0x00080121), "3/3", NOT_ALLOWED, "3"),
        ((0x00400281, 0x00080104), "1/1", "1/1", "1"),
        ((0x00400281, 0x00080100), "1C/1C", "3/1C", "1C"),
        ((0x00400281, 0x00080121), "3/3", "3/3", "3"),
        ((0x00400281, 0x00080121, 0x00080104), "1/1", "1/1", "1"),
        ((0x00081032, 0x00080104), "3/3", "3/3", "3"),
        ((0x00081032, 0x00080102), "1C/1C", "1C/1C", "1C"),
        ((0x00400260, 0x00080106), "3/3", "3/3", "3"),
    ],
)
def test_spot_checks_against_the_digest(path: TagPath, create: str, nset: str, final: str) -> None:
    row = table.BY_PATH[path]
    assert (row.create, row.set, row.final_type) == (create, nset, final)


def test_full_example_holds_every_path_of_the_table() -> None:
    full = ex.full_create()
    missing = [ids(row) for row in table.ROWS if not present(full, row.path)]
    assert missing == []


# --- N-CREATE -------------------------------------------------------------------------------


@pytest.mark.parametrize("builder", [ex.minimal_create, ex.full_create])
def test_valid_create_is_stored_with_sop_uids_in_tag_order(builder: Any) -> None:
    attributes = builder()
    before = copy.deepcopy(attributes)
    stored = validate_create(UID, attributes)
    assert attributes == before  # the input is not mutated
    assert stored["00080016"] == {"vr": "UI", "Value": [MPPS_SOP_CLASS_UID]}
    assert stored["00080018"] == {"vr": "UI", "Value": [UID]}
    assert status_of(stored) is PpsStatus.IN_PROGRESS
    assert {k: v for k, v in stored.items() if k not in ("00080016", "00080018")} == before

    def check_order(dataset: JsonDataset) -> None:
        assert list(dataset) == sorted(dataset)
        for value in dataset.values():
            if value["vr"] == "SQ":
                for item in value.get("Value", []):
                    check_order(item)

    check_order(stored)


CREATE_REQUIRED = rows(lambda r: scu_type(r.create) in ("1", "2"))
CREATE_TYPE_1 = rows(
    lambda r: scu_type(r.create) in ("1", "1C") and r.tag != table.SPECIFIC_CHARACTER_SET
)
CREATE_TYPE_2 = rows(lambda r: scu_type(r.create) == "2")
CREATE_OPTIONAL = rows(lambda r: scu_type(r.create) == "3")


def test_the_table_walk_has_rows_of_every_kind() -> None:
    assert len(CREATE_REQUIRED) > 40
    assert len(CREATE_TYPE_2) > 20
    assert len(CREATE_OPTIONAL) > 50


@pytest.mark.parametrize("row", CREATE_REQUIRED, ids=ids)
def test_create_without_scu_mandatory_attribute_is_0120(row: Row) -> None:
    with pytest.raises(errors.MissingAttribute) as caught:
        validate_create(UID, remove(ex.full_create(), row.path))
    assert caught.value.offending == (row.tag,)
    assert row.keyword in caught.value.message
    assert_error(caught.value, Operation.CREATE, 0x0120, 400)


@pytest.mark.parametrize("row", CREATE_TYPE_1, ids=ids)
def test_create_with_empty_type_1_attribute_is_0121(row: Row) -> None:
    with pytest.raises(errors.MissingAttributeValue) as caught:
        validate_create(UID, empty(ex.full_create(), row.path))
    assert caught.value.offending == (row.tag,)
    assert_error(caught.value, Operation.CREATE, 0x0121, 400)


@pytest.mark.parametrize("row", CREATE_TYPE_2, ids=ids)
def test_create_with_empty_type_2_attribute_is_accepted(row: Row) -> None:
    stored = validate_create(UID, empty(ex.full_create(), row.path))
    assert status_of(stored) is PpsStatus.IN_PROGRESS


@pytest.mark.parametrize("row", CREATE_OPTIONAL, ids=ids)
def test_create_without_type_3_attribute_is_accepted(row: Row) -> None:
    validate_create(UID, remove(ex.full_create(), row.path))


def test_missing_attributes_are_all_listed() -> None:
    attributes = ex.minimal_create()
    del attributes["00100010"], attributes["00080060"]
    del attributes["00400270"]["Value"][0]["0020000D"]
    with pytest.raises(errors.MissingAttribute) as caught:
        validate_create(UID, attributes)
    assert caught.value.offending == (0x00080060, 0x00100010, 0x0020000D)
    assert "ScheduledStepAttributesSequence>StudyInstanceUID (0020,000D)" in caught.value.message


def test_missing_wins_over_empty() -> None:
    attributes = empty(ex.minimal_create(), (0x00400253,))
    del attributes["00400241"]
    with pytest.raises(errors.MissingAttribute) as caught:
        validate_create(UID, attributes)
    assert caught.value.offending == (0x00400241,)


@pytest.mark.parametrize(
    "value", [["COMPLETED"], ["DISCONTINUED"], ["in progress"], ["SCHEDULED"], ["IN PROGRESS"] * 2]
)
def test_create_status_other_than_in_progress_is_0106(value: list[str]) -> None:
    attributes = ex.minimal_create()
    attributes["00400252"] = {"vr": "CS", "Value": value}
    with pytest.raises(errors.InvalidAttributeValue) as caught:
        validate_create(UID, attributes)
    assert caught.value.offending == (STATUS,)
    assert_error(caught.value, Operation.CREATE, 0x0106, 400)


def test_create_status_padded_like_dimse_is_accepted() -> None:
    attributes = ex.minimal_create()
    attributes["00400252"] = attr("CS", "IN PROGRESS ")
    assert status_of(validate_create(UID, attributes)) is PpsStatus.IN_PROGRESS


def test_create_sop_instance_uid_in_data_set_must_match() -> None:
    attributes = ex.minimal_create()
    attributes["00080018"] = attr("UI", UID)
    attributes["00080016"] = attr("UI", MPPS_SOP_CLASS_UID)
    assert validate_create(UID, attributes)["00080018"]["Value"] == [UID]
    attributes["00080018"] = attr("UI", "1.2.3")
    with pytest.raises(errors.InvalidAttributeValue) as caught:
        validate_create(UID, attributes)
    assert caught.value.offending == (0x00080018,)
    assert_error(caught.value, Operation.CREATE, 0x0106, 400)


def test_create_sop_class_uid_must_be_mpps() -> None:
    attributes = ex.minimal_create()
    attributes["00080016"] = attr("UI", "1.2.840.10008.3.1.2.3.4")
    with pytest.raises(errors.InvalidAttributeValue) as caught:
        validate_create(UID, attributes)
    assert caught.value.offending == (0x00080016,)


def test_create_with_bad_uid_is_0117() -> None:
    with pytest.raises(errors.InvalidInstanceUID) as caught:
        validate_create("1.2.03", ex.minimal_create())
    assert_error(caught.value, Operation.CREATE, 0x0117, 400)


def test_unlisted_attributes_are_kept() -> None:
    attributes = ex.minimal_create()
    attributes["00080020"] = attr("DA", "20250101")
    attributes["00091010"] = attr("LO", "private")
    attributes["00090010"] = attr("LO", "ACME")
    stored = validate_create(UID, attributes)
    assert stored["00080020"] == attr("DA", "20250101")
    assert stored["00091010"] == attr("LO", "private")


def test_lowercase_keys_are_normalised() -> None:
    attributes = ex.minimal_create()
    attributes["0008103e"] = attributes.pop("00400254")  # an unlisted attribute, lower case
    attributes["00400254"] = attr("LO", "x")
    stored = validate_create(UID, attributes)
    assert "0008103E" in stored
    assert "0008103e" not in stored


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"0010": attr("LO", "x")},
        {"0010001G": attr("LO", "x")},
        {"00100020": "P-4711"},
        {"00100020": {"Value": ["P-4711"]}},
        {"00100020": {"vr": "LO", "Value": "P-4711"}},
        {"00400270": {"vr": "SQ", "Value": ["not an item"]}},
        {"0008103e": attr("LO", "a"), "0008103E": attr("LO", "b")},
    ],
)
def test_malformed_dataset_is_invalid_payload(bad: Any) -> None:
    with pytest.raises(errors.InvalidPayload) as caught:
        validate_create(UID, bad)
    assert_error(caught.value, Operation.CREATE, 0x0110, 400)


def test_sequence_sent_with_another_vr_is_invalid() -> None:
    attributes = ex.minimal_create()
    attributes["00400270"] = attr("LO", "x")
    with pytest.raises(errors.InvalidAttributeValue) as caught:
        validate_create(UID, attributes)
    assert caught.value.offending == (0x00400270,)


# Conditional (1C) attributes: Local/Universal Entity ID and the code macros.


def _with_ssas(changes: JsonDataset) -> JsonDataset:
    """The full example with ``changes`` applied to its Scheduled Step Attributes item."""
    attributes = ex.full_create()
    attributes["00400270"]["Value"][0].update(changes)
    return attributes


@pytest.mark.parametrize(
    ("issuer", "offending"),
    [
        ({}, (0x00400031, 0x00400032)),
        ({"00400032": attr("UT", "1.2.3")}, (0x00400033,)),
        ({"00400031": attr("UT", "HOSP"), "00400032": attr("UT", "1.2.3")}, (0x00400033,)),
    ],
)
def test_entity_id_conditions(issuer: JsonDataset, offending: tuple[int, ...]) -> None:
    with pytest.raises(errors.MissingAttribute) as caught:
        validate_create(UID, _with_ssas({"00080051": sq(issuer)}))
    assert caught.value.offending == offending


@pytest.mark.parametrize(
    "issuer",
    [
        {"00400031": attr("UT", "HOSP")},
        {"00400032": attr("UT", "1.2.3"), "00400033": attr("CS", "ISO")},
    ],
)
def test_entity_id_either_form_is_enough(issuer: JsonDataset) -> None:
    validate_create(UID, _with_ssas({"00080051": sq(issuer)}))


def test_universal_entity_id_type_required_in_patient_id_qualifiers() -> None:
    attributes = ex.minimal_create()
    attributes["00100024"] = sq({"00400032": attr("UT", "1.2.3")})
    with pytest.raises(errors.MissingAttribute) as caught:
        validate_create(UID, attributes)
    assert caught.value.offending == (0x00400033,)
    attributes["00100024"] = sq({"00400035": attr("CS", "MR")})  # only "all other" ones
    validate_create(UID, attributes)


@pytest.mark.parametrize(
    ("item", "offending"),
    [
        ({"00080104": attr("LO", "Head")}, (0x00080100, 0x00080119, 0x00080120)),
        ({"00080100": attr("SH", "X1"), "00080104": attr("LO", "Head")}, (0x00080102,)),
        ({"00080119": attr("UC", "X" * 20), "00080104": attr("LO", "Head")}, (0x00080102,)),
    ],
)
def test_code_value_conditions(item: JsonDataset, offending: tuple[int, ...]) -> None:
    with pytest.raises(errors.MissingAttribute) as caught:
        validate_create(UID, _with_ssas({"00400008": sq(item)}))
    assert caught.value.offending == offending


@pytest.mark.parametrize(
    "item",
    [
        code("X1", "99LOCAL", "Head"),
        {
            "00080119": attr("UC", "X" * 20),
            "00080102": attr("SH", "99LOCAL"),
            "00080104": attr("LO", "Head"),
        },
        {"00080120": attr("UR", "urn:oid:1.2.3"), "00080104": attr("LO", "Head")},
    ],
)
def test_code_value_forms_accepted(item: JsonDataset) -> None:
    validate_create(UID, _with_ssas({"00400008": sq(item)}))


def test_code_meaning_is_optional_only_in_the_optional_meaning_macro() -> None:
    attributes = ex.minimal_create()
    attributes["00081032"] = sq({"00080100": attr("SH", "X"), "00080102": attr("SH", "L")})
    validate_create(UID, attributes)  # F.7.2-1e: Code Meaning 3/3
    attributes["00400281"] = sq({"00080100": attr("SH", "X"), "00080102": attr("SH", "L")})
    with pytest.raises(errors.MissingAttribute) as caught:
        validate_create(UID, attributes)  # F.7.2-1c: Code Meaning 1/1
    assert caught.value.offending == (0x00080104,)


# --- N-SET ----------------------------------------------------------------------------------

SET_NOT_ALLOWED = rows(lambda r: not r.parent and r.set == NOT_ALLOWED)
SET_ALLOWED = rows(lambda r: not r.parent and r.set != NOT_ALLOWED)
SETTABLE_TOPS = {row.path[0] for row in SET_ALLOWED}
SET_NESTED_REQUIRED = rows(
    lambda r: r.parent and r.path[0] in SETTABLE_TOPS and scu_type(r.set) in ("1", "2")
)
SET_VALUE_REQUIRED = rows(
    lambda r: (
        r.path[0] in SETTABLE_TOPS
        and r.set != NOT_ALLOWED
        and r.tag != table.SPECIFIC_CHARACTER_SET
        and (scu_type(r.set).startswith("1") or scp_type(r.set).startswith("1"))
    )
)


# Values an N-SET may send where the create sent them empty (or as IN PROGRESS).
SET_VALUES = {
    "00400250": attr("DA", "20250101"),
    "00400251": attr("TM", "1300"),
    "00400252": attr("CS", "IN PROGRESS"),
}


def _sample(row: Row) -> JsonDataset:
    """An N-SET that sends the full example's value of the top-level attribute of ``row``."""
    key = tag_key(row.path[0])
    return {key: SET_VALUES.get(key) or ex.full_create()[key]}


@pytest.mark.parametrize("row", SET_NOT_ALLOWED, ids=ids)
def test_set_of_not_allowed_attribute_is_refused(row: Row) -> None:
    stored = created_full()
    with pytest.raises(errors.NotAllowedAttribute) as caught:
        apply_update(stored, {tag_key(row.tag): stored[tag_key(row.tag)]})
    assert caught.value.offending == (row.tag,)
    assert_error(caught.value, Operation.UPDATE, 0x0105, 400)


def test_not_allowed_attributes_are_all_listed() -> None:
    stored = created_full()
    changes = {k: stored[k] for k in ("00100010", "00080060", "00400270")}
    changes.update(ex.completed_update())
    with pytest.raises(errors.NotAllowedAttribute) as caught:
        apply_update(stored, changes)
    assert caught.value.offending == (0x00080060, 0x00100010, 0x00400270)


@pytest.mark.parametrize("row", SET_ALLOWED, ids=ids)
def test_set_of_settable_attribute_is_applied(row: Row) -> None:
    changes = _sample(row)
    merged = apply_update(created_full(), changes)
    for key, value in changes.items():
        assert merged[key] == value
    assert status_of(merged) is PpsStatus.IN_PROGRESS


@pytest.mark.parametrize("row", SET_NESTED_REQUIRED, ids=ids)
def test_set_item_without_required_attribute_is_0120(row: Row) -> None:
    changes = remove(_sample(row), row.path)
    with pytest.raises(errors.MissingAttribute) as caught:
        apply_update(created_full(), changes)
    assert caught.value.offending == (row.tag,)
    assert_error(caught.value, Operation.UPDATE, 0x0120, 400)


@pytest.mark.parametrize("row", SET_VALUE_REQUIRED, ids=ids)
def test_set_with_empty_type_1_value_is_0121(row: Row) -> None:
    changes = empty(_sample(row), row.path)
    with pytest.raises(errors.MissingAttributeValue) as caught:
        apply_update(created_full(), changes)
    assert caught.value.offending == (row.tag,)
    assert_error(caught.value, Operation.UPDATE, 0x0121, 400)


def test_the_set_walk_has_rows_of_every_kind() -> None:
    assert len(SET_NOT_ALLOWED) == 22
    assert {r.tag for r in SET_ALLOWED} == {
        0x00080005, 0x00400252, 0x00400254, 0x00400255, 0x00081032, 0x00401012,
        0x00400250, 0x00400251, 0x00400280, 0x00400281, 0x00400260, 0x00400340,
    }  # fmt: skip
    assert len(SET_NESTED_REQUIRED) >= 15
    assert {(0x00400252,), (0x00400250,), (0x00400340,)} <= {r.path for r in SET_VALUE_REQUIRED}


@pytest.mark.parametrize("value", [["SCHEDULED"], ["completed"], ["COMPLETED", "DISCONTINUED"]])
def test_set_status_outside_the_three_values_is_0106(value: list[str]) -> None:
    with pytest.raises(errors.InvalidAttributeValue) as caught:
        apply_update(created_full(), {"00400252": {"vr": "CS", "Value": value}})
    assert caught.value.offending == (STATUS,)
    assert_error(caught.value, Operation.UPDATE, 0x0106, 400)


def test_set_of_attribute_not_created_is_incompatible() -> None:
    attributes = ex.minimal_create()
    del attributes["00400281"]  # the modality did not create the reason sequence (Note 5)
    stored = validate_create(UID, attributes)
    with pytest.raises(errors.IncompatibleUpdate) as caught:
        apply_update(stored, ex.discontinued_update())
    assert caught.value.offending == (0x00400281,)
    assert_error(caught.value, Operation.UPDATE, 0x0110, 409)


def test_set_of_unlisted_attribute_needs_it_created() -> None:
    stored = validate_create(UID, ex.minimal_create())
    with pytest.raises(errors.IncompatibleUpdate) as caught:
        apply_update(stored, {"00080020": attr("DA", "20250101")})
    assert caught.value.offending == (0x00080020,)
    attributes = ex.minimal_create()
    attributes["00080020"] = attr("DA")
    stored = validate_create(UID, attributes)
    merged = apply_update(stored, {"00080020": attr("DA", "20250101")})
    assert merged["00080020"] == attr("DA", "20250101")


def test_sequences_are_replaced_whole() -> None:
    stored = validate_create(UID, ex.minimal_create())
    second = ex.series_item()
    second["0020000E"] = attr("UI", "1.2.3.9")
    stored = apply_update(stored, {PSS: sq(ex.series_item(), second)})
    assert len(stored[PSS]["Value"]) == 2
    stored = apply_update(stored, {PSS: sq(second)})
    assert stored[PSS] == sq(second)


def test_update_does_not_mutate_its_inputs() -> None:
    stored = validate_create(UID, ex.minimal_create())
    changes = ex.completed_update()
    before = copy.deepcopy((stored, changes))
    merged = apply_update(stored, changes)
    assert (stored, changes) == before
    merged[PSS]["Value"][0]["00181030"]["Value"][0] = "changed"
    assert changes[PSS]["Value"][0]["00181030"]["Value"] == ["Special^99a_HeadCTA"]


def test_update_sop_uids_must_match_and_are_not_duplicated() -> None:
    stored = validate_create(UID, ex.minimal_create())
    same = {"00080016": attr("UI", MPPS_SOP_CLASS_UID), "00080018": attr("UI", UID)}
    assert apply_update(stored, same) == stored
    with pytest.raises(errors.InvalidAttributeValue) as caught:
        apply_update(stored, {"00080018": attr("UI", "1.2.3")})
    assert caught.value.offending == (0x00080018,)


@pytest.mark.parametrize(
    ("stored_cs", "sent_cs", "expected"),
    [
        (None, ["ISO_IR 100"], attr("CS", "ISO_IR 100")),
        (["ISO_IR 100"], ["ISO_IR 100"], attr("CS", "ISO_IR 100")),
        (["ISO_IR 100"], ["ISO_IR 144"], attr("CS", "ISO_IR 192")),
        (["ISO_IR 100"], [], attr("CS", "ISO_IR 100")),
    ],
)
def test_specific_character_set_is_combined_not_replaced(
    stored_cs: list[str] | None, sent_cs: list[str], expected: JsonDataset
) -> None:
    attributes = ex.minimal_create()
    if stored_cs is not None:
        attributes["00080005"] = attr("CS", *stored_cs)
    stored = validate_create(UID, attributes)
    merged = apply_update(stored, {"00080005": attr("CS", *sent_cs), **ex.series_update()})
    assert merged["00080005"] == expected


def test_empty_specific_character_set_means_default_repertoire() -> None:
    attributes = ex.minimal_create()
    attributes["00080005"] = attr("CS")
    stored = validate_create(UID, attributes)
    assert stored["00080005"] == attr("CS")


@pytest.mark.parametrize("final", [ex.completed_update, ex.discontinued_update])
def test_update_after_final_state_is_0110_a710(final: Any) -> None:
    stored = apply_update(created_full(), final())
    for changes in ({}, ex.series_update(), {"00400252": attr("CS", "IN PROGRESS")}):
        with pytest.raises(errors.FinalStateViolation) as caught:
            apply_update(stored, changes)
        assert_error(
            caught.value, Operation.UPDATE, 0x0110, 409, ErrorId.MPPS_MAY_NO_LONGER_BE_UPDATED
        )
        assert dimse_failure(caught.value, Operation.UPDATE).error_comment == MPPS_FINAL_COMMENT


def test_final_state_violation_comes_before_request_errors() -> None:
    stored = apply_update(created_full(), ex.completed_update())
    with pytest.raises(errors.FinalStateViolation):
        apply_update(stored, {"00100010": attr("PN")})


def test_stored_mpps_without_status_is_an_internal_error() -> None:
    stored = validate_create(UID, ex.minimal_create())
    del stored["00400252"]
    with pytest.raises(errors.InternalError):
        apply_update(stored, ex.series_update())


# --- Final State ----------------------------------------------------------------------------

FINAL_REQUIRED = rows(lambda r: r.final_type in ("1", "2") and r.tag != STATUS)
FINAL_VALUE_REQUIRED = rows(lambda r: r.final_type == "1" and r.tag != STATUS)


def _completing(row: Row, final: Any) -> JsonDataset:
    """The completing N-SET without the attribute ``row`` lives under."""
    changes: JsonDataset = final()
    changes.pop(tag_key(row.path[0]), None)
    return changes


@pytest.mark.parametrize("final", [ex.completed_update, ex.discontinued_update])
@pytest.mark.parametrize("row", FINAL_REQUIRED, ids=ids)
def test_final_state_needs_required_attribute(row: Row, final: Any) -> None:
    stored = remove(created_full(), row.path)
    with pytest.raises(errors.IncompatibleUpdate) as caught:
        apply_update(stored, _completing(row, final))
    assert caught.value.offending == (row.tag,)
    assert_error(caught.value, Operation.UPDATE, 0x0110, 409)


@pytest.mark.parametrize("row", FINAL_VALUE_REQUIRED, ids=ids)
def test_final_state_needs_value_of_type_1_attribute(row: Row) -> None:
    stored = empty(created_full(), row.path)
    with pytest.raises(errors.IncompatibleUpdate) as caught:
        apply_update(stored, _completing(row, ex.completed_update))
    assert caught.value.offending == (row.tag,)


def test_final_state_rows_include_the_explicit_column() -> None:
    explicit = {r.path for r in FINAL_VALUE_REQUIRED if r.final == "1"}
    assert explicit == {
        (0x00400250,),
        (0x00400251,),
        (0x00400340,),
        (0x00400340, 0x00181030),
        (0x00400340, 0x0020000E),
    }
    assert len(FINAL_REQUIRED) > 40


def test_completion_without_end_date_time_and_series_lists_all() -> None:
    stored = validate_create(UID, ex.minimal_create())
    with pytest.raises(errors.IncompatibleUpdate) as caught:
        apply_update(stored, {"00400252": attr("CS", "COMPLETED")})
    assert caught.value.offending == (0x00400250, 0x00400251, 0x00400340)
    assert "COMPLETED" in caught.value.message


def test_final_state_checks_conditional_attributes() -> None:
    stored = remove(created_full(), (0x00400270, 0x00080051, 0x00400033))
    with pytest.raises(errors.IncompatibleUpdate) as caught:
        apply_update(stored, ex.completed_update())
    assert caught.value.offending == (0x00400033,)


def test_final_state_may_be_met_over_several_updates() -> None:
    stored = validate_create(UID, ex.minimal_create())
    stored = apply_update(stored, {"00400250": attr("DA", "20250101"), **ex.series_update()})
    stored = apply_update(stored, {"00400251": attr("TM", "1300")})
    stored = apply_update(stored, {"00400252": attr("CS", "COMPLETED")})
    assert status_of(stored) is PpsStatus.COMPLETED


# --- Lifecycle on the spec's worked example (PS3.18 B.37-B.40 as fixed in the digest) ------


def test_lifecycle_create_series_complete_then_refuse() -> None:
    stored = validate_create(UID, ex.minimal_create())
    assert status_of(stored) is PpsStatus.IN_PROGRESS
    assert referenced_steps(stored) == [(ex.STUDY_UID, ex.SPS_ID)]

    stored = apply_update(stored, ex.series_update())
    assert status_of(stored) is PpsStatus.IN_PROGRESS
    assert stored[PSS]["Value"][0]["0020000E"]["Value"] == [ex.SERIES_UID]

    stored = apply_update(stored, ex.completed_update())
    assert status_of(stored) is PpsStatus.COMPLETED
    assert stored["00400250"] == attr("DA", "20250101")
    assert stored["00400251"] == attr("TM", "1300")
    assert stored["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Sally"}]}
    assert list(stored) == sorted(stored)

    with pytest.raises(errors.FinalStateViolation) as caught:
        apply_update(stored, ex.series_update())
    failure = dimse_failure(caught.value, Operation.UPDATE)
    assert (failure.status, failure.error_id) == (DimseStatus.PROCESSING_FAILURE, 0xA710)
    assert http_status(caught.value, Operation.UPDATE) == HttpStatus.CONFLICT

    # Retrieve of selected attributes: ascending tag order whatever the request order.
    wanted = [0x00100010, 0x00400252, 0x00400242]
    selected = select_attributes(stored, wanted)
    assert list(selected) == ["00100010", "00400242", "00400252"]
    assert selected["00400252"] == attr("CS", "COMPLETED")
    assert missing_requested(stored, wanted) == ()


def test_lifecycle_discontinued_with_reason() -> None:
    stored = validate_create(UID, ex.minimal_create())
    stored = apply_update(stored, ex.discontinued_update())
    assert status_of(stored) is PpsStatus.DISCONTINUED
    reason = stored["00400281"]["Value"][0]
    assert reason["00080100"] == attr("SH", "110514")
    with pytest.raises(errors.FinalStateViolation):
        apply_update(stored, {"00400280": attr("ST", "too late")})


def test_discontinuation_reason_needs_code_meaning_in_an_update() -> None:
    stored = validate_create(UID, ex.minimal_create())
    changes = ex.discontinued_update()
    del changes["00400281"]["Value"][0]["00080104"]
    with pytest.raises(errors.MissingAttribute) as caught:
        apply_update(stored, changes)
    assert caught.value.offending == (0x00080104,)


# --- Reading helpers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (attr("CS", "IN PROGRESS"), PpsStatus.IN_PROGRESS),
        (attr("CS", "COMPLETED"), PpsStatus.COMPLETED),
        (attr("CS", "DISCONTINUED "), PpsStatus.DISCONTINUED),
        (attr("CS"), None),
        (attr("CS", "SCHEDULED"), None),
        (attr("CS", "COMPLETED", "COMPLETED"), None),
        ({"vr": "CS", "Value": [None]}, None),
        (None, None),
    ],
)
def test_status_of(value: JsonDataset | None, expected: PpsStatus | None) -> None:
    mpps = {} if value is None else {"00400252": value}
    assert status_of(mpps) is expected
    assert PpsStatus.COMPLETED.is_final and not PpsStatus.IN_PROGRESS.is_final


def test_referenced_steps_skips_unscheduled_items_and_duplicates() -> None:
    attributes = ex.minimal_create()
    first = attributes["00400270"]["Value"][0]
    second = copy.deepcopy(first)
    second["00400009"] = attr("SH", "PS-ID-24")
    unscheduled = copy.deepcopy(first)
    unscheduled["00400009"] = attr("SH")
    attributes["00400270"] = sq(first, second, copy.deepcopy(first), unscheduled)
    stored = validate_create(UID, attributes)
    assert referenced_steps(stored) == [(ex.STUDY_UID, ex.SPS_ID), (ex.STUDY_UID, "PS-ID-24")]
    assert referenced_steps({}) == []


def test_select_all_and_missing_requested() -> None:
    stored = validate_create(UID, ex.minimal_create())
    everything = select_attributes(stored, None)
    assert everything == stored
    everything["00100010"]["Value"][0]["Alphabetic"] = "changed"
    assert stored["00100010"]["Value"][0]["Alphabetic"] == "Doe^Sally"
    wanted = [0x00400252, 0x00380010, 0x00400252, 0x00101002]
    assert list(select_attributes(stored, wanted)) == ["00400252"]
    assert missing_requested(stored, wanted) == (0x00380010, 0x00101002)
    assert missing_requested(stored, None) == ()
    # Present but empty counts as returned (the SCP maintains it, its value is unknown).
    assert missing_requested(stored, [0x00100030]) == ()


@pytest.mark.parametrize("tag", [-1, 0x1_0000_0000])
def test_select_with_impossible_tag_is_bad_query(tag: int) -> None:
    with pytest.raises(errors.BadQuery) as caught:
        select_attributes({}, [tag])
    assert_error(caught.value, Operation.RETRIEVE, 0x0106, 400)
