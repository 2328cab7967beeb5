"""The encoding hook hands pynetdicom exactly the bytes its own encoder would write."""

from __future__ import annotations

from io import BytesIO

from pydicom.dataset import Dataset
from pynetdicom import dimse_messages, service_class
from pynetdicom.dimse_messages import C_FIND_RSP, N_GET_RQ
from pynetdicom.dimse_primitives import C_FIND, N_GET
from pynetdicom.dsutils import encode as pynetdicom_encode

from gateway import dicom_wire
from gateway.dicom_wire import _COMMAND_SETS, _encode, attach, install

MWL_FIND = "1.2.840.10008.5.1.4.31"


def find_response(message_id: int, status: int) -> Dataset:
    primitive = C_FIND()
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.AffectedSOPClassUID = MWL_FIND
    primitive.Status = status
    primitive.Identifier = BytesIO(b"\x08\x00\x50\x00\x00\x00\x00\x00")
    message = C_FIND_RSP()
    message.primitive_to_message(primitive)
    return message.command_set


def test_pynetdicom_still_calls_the_names_the_hook_replaces() -> None:
    """If pynetdicom stops calling these, the hook silently stops saving work."""
    install()
    assert service_class.encode is _encode
    assert dimse_messages.encode is _encode
    assert "encode" in service_class.ServiceClass._c_find_scp.__code__.co_names
    assert "encode" in dimse_messages.DIMSEMessage.encode_msg.__code__.co_names
    assert "encode" in dimse_messages.DIMSEMessage._set_command_group_length.__code__.co_names


def test_command_sets_are_remembered_and_equal_pynetdicoms() -> None:
    install()
    _COMMAND_SETS.clear()
    for message_id in (1, 2, 1):
        for status in (0xFF00, 0xFF01, 0x0000):
            command_set = find_response(message_id, status)
            assert _encode(command_set, True, True) == pynetdicom_encode(command_set, True, True)
    # Each of the 6 distinct sets twice: without its group length (to learn it), and with.
    assert len(_COMMAND_SETS) == 12


def test_command_sets_with_list_values_and_data_sets_are_not_remembered() -> None:
    _COMMAND_SETS.clear()
    primitive = N_GET()
    primitive.MessageID = 3
    primitive.RequestedSOPClassUID = "1.2.840.10008.3.1.2.3.3"
    primitive.RequestedSOPInstanceUID = "1.2.3"
    primitive.AttributeIdentifierList = [0x00100010, 0x00100020]
    message = N_GET_RQ()
    message.primitive_to_message(primitive)
    assert _encode(message.command_set, True, True) == pynetdicom_encode(
        message.command_set, True, True
    )
    data_set = Dataset()
    data_set.PatientID = "P1"
    assert _encode(data_set, False, True) == pynetdicom_encode(data_set, False, True)
    assert not _COMMAND_SETS


def test_attached_bytes_are_used_only_for_their_transfer_syntax() -> None:
    ds = Dataset()
    ds.PatientID = "P1"
    attach(ds, implicit_vr=True, little_endian=True, data=b"ready")
    assert _encode(ds, True, True) == b"ready"
    assert _encode(ds, False, True) == pynetdicom_encode(ds, False, True)
    assert dicom_wire.attached(ds, implicit_vr=False, little_endian=True) is None
