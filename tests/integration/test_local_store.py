"""The local store beyond the contract: layout, narrowing safety, follow-up, retention."""

from __future__ import annotations

import sqlite3
from datetime import date, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from gateway.backends.local import LocalBackend
from gateway.backends.local.demo import seed_demo
from gateway.backends.local.retention import PurgeReport, run_retention
from gateway.backends.local.search import plan_search
from gateway.errors import ConfigError, ErrorKind, GatewayError
from gateway.model.types import JsonDataset
from gateway.settings import RetentionSettings, StoreSettings
from tests.contract.worklist_examples import (
    MODALITY,
    PATIENT_NAME,
    SPS_STATUS,
    START_DATE,
    STATION,
    WORKLIST,
    attr,
    item,
    query,
    sps_item,
    step_ids,
    study_uid,
)
from tests.unit.mpps_examples import (
    MPPS_UID,
    SPS_ID,
    STUDY_UID,
    completed_update,
    discontinued_update,
    minimal_create,
)


async def collect(backend: LocalBackend, q: object) -> list[JsonDataset]:
    return [r async for r in backend.search_worklist(q)]  # type: ignore[arg-type]


def sql(backend: LocalBackend, statement: str, *params: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(backend.path) as conn:
        return conn.execute(statement, params).fetchall()


async def test_store_is_wal_and_each_sps_item_is_one_row(local_backend: LocalBackend) -> None:
    report = await local_backend.upsert_worklist_items(WORKLIST)
    assert (report.inserted, report.updated) == (9, 0)
    assert sql(local_backend, "PRAGMA journal_mode") == [("wal",)]
    rows = sql(local_backend, "SELECT sps_id FROM sps WHERE study_uid = ?", study_uid(7))
    assert sorted(str(r[0]) for r in rows) == ["S7a", "S7b"]
    again = await local_backend.upsert_worklist_items(WORKLIST)
    assert (again.inserted, again.updated) == (0, 9)
    assert await local_backend.count_worklist_items() == 9


async def test_stored_item_is_kept_as_received_without_charset(
    local_backend: LocalBackend,
) -> None:
    raw = item(1, "Müller^Jürgen", sps_item("S1", "CT01 ", "CT", "20250110"))
    raw["00080005"] = attr("CS", "ISO_IR 100")
    raw["00080000"] = attr("UL", 0)  # a group length: never part of DICOM JSON
    await local_backend.upsert_worklist_items([raw])
    stored = await local_backend.get_worklist_item(study_uid(1), "S1")
    assert stored is not None
    assert "00080005" not in stored and "00080000" not in stored
    assert list(stored) == sorted(stored)
    assert stored["00400100"]["Value"][0]["00400001"]["Value"] == ["CT01 "]
    # Padding is not significant for matching (PS3.5 6.2): the narrowing agrees.
    assert step_ids(await collect(local_backend, query((STATION, "CT01")))) == {"1"}


@pytest.mark.parametrize(
    ("broken", "kind"),
    [
        ({"00100010": attr("PN")}, ErrorKind.MISSING_ATTRIBUTE),  # no study UID
        ({"0020000D": attr("UI", "1.2.3")}, ErrorKind.MISSING_ATTRIBUTE),  # no SPS sequence
        ({"0020000D": {"Value": ["1.2"]}}, ErrorKind.INVALID_PAYLOAD),  # no vr
    ],
)
async def test_invalid_items_are_refused_and_nothing_is_written(
    local_backend: LocalBackend, broken: JsonDataset, kind: ErrorKind
) -> None:
    with pytest.raises(GatewayError) as caught:
        await local_backend.upsert_worklist_items([WORKLIST[0], broken])
    assert caught.value.kind is kind
    assert await local_backend.count_worklist_items() == 0


async def test_step_without_sps_id_is_refused(local_backend: LocalBackend) -> None:
    step = sps_item("S1", "CT01", "CT")
    del step["00400009"]
    with pytest.raises(GatewayError) as caught:
        await local_backend.upsert_worklist_items([item(1, "A^B", step)])
    assert caught.value.offending == (0x00400009,)


async def test_irregular_rows_still_reach_the_matcher(local_backend: LocalBackend) -> None:
    odd_date = item(20, "Odd^Date", sps_item("D1", "CT01", "CT", "2025.01.10"))
    two_modalities = item(21, "Two^Mods", sps_item("D2", "CT01", "CT", "20250110"))
    two_modalities["00400100"]["Value"][0]["00080060"] = attr("CS", "MR", "CT")
    two_names = item(22, "First^Name", sps_item("D3", "CT01", "CT", "20250110"))
    two_names["00100010"]["Value"].append({"Alphabetic": "Second^Name"})
    await local_backend.upsert_worklist_items([odd_date, two_modalities, two_names])
    flagged = sql(local_backend, "SELECT sps_id FROM sps WHERE irregular != 0 ORDER BY sps_id")
    assert flagged == [("D1",), ("D2",), ("D3",)]
    assert plan_search(query((START_DATE, "20250110"))).narrowed
    assert step_ids(await collect(local_backend, query((START_DATE, "20250110")))) == {
        "D1",
        "D2",
        "D3",
    }
    assert step_ids(await collect(local_backend, query((MODALITY, "CT")))) == {"D1", "D2", "D3"}
    assert step_ids(await collect(local_backend, query((PATIENT_NAME, "Second*")))) == {"D3"}


@pytest.mark.parametrize(
    ("keys", "presorted"),
    [
        (((STATION, "CT01"), (START_DATE, "20250110")), True),
        (((MODALITY, "CT"), (START_DATE, "20250110-20250112")), True),
        (((PATIENT_NAME, "Smith*"),), False),  # the narrowed rows are sorted by date
    ],
)
def test_bench_queries_are_narrowed_by_an_index(
    tmp_path: Path, keys: tuple[tuple[tuple[int, ...], str], ...], presorted: bool
) -> None:
    plan = plan_search(query(*keys))
    with sqlite3.connect(tmp_path / "plan.sqlite3") as conn:
        from gateway.backends.local.schema import create_schema

        create_schema(conn)
        steps = " ".join(
            str(r[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + plan.sql, plan.params)
        )
    # Only the partial index of irregular rows is scanned; station and modality searches
    # come out of their index already in order (no sort before the first row).
    narrowed = steps.replace("SCAN s USING INDEX sps_irregular", "")
    assert "SEARCH" in narrowed and "SCAN" not in narrowed, steps
    assert ("TEMP B-TREE" not in steps) is presorted, steps


async def test_early_close_leaves_no_read_snapshot(local_backend: LocalBackend) -> None:
    await local_backend.upsert_worklist_items(
        [item(100 + n, "P^Q", sps_item(f"B{n}", "BULK", "CT", "20250101")) for n in range(500)]
    )
    results = local_backend.search_worklist(query((STATION, "BULK")))
    await anext(results)
    # TRUNCATE needs every reader gone; timeout=0: report "busy" at once, do not wait.
    with sqlite3.connect(local_backend.path, timeout=0) as conn:
        busy_while_open = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    await results.aclose()
    with sqlite3.connect(local_backend.path, timeout=0) as conn:
        busy_after = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    assert (busy_while_open, busy_after) == (1, 0)


async def test_sps_status_follows_mpps(local_backend: LocalBackend) -> None:
    step = item(1, "Doe^Sally", sps_item(SPS_ID, "CTSCANNER", "CT", "20250101"))
    step["0020000D"] = attr("UI", STUDY_UID)
    await local_backend.upsert_worklist_items([step])

    async def status() -> list[str]:
        found = await collect(local_backend, query((SPS_STATUS, "")))
        return [r["00400100"]["Value"][0]["00400020"]["Value"][0] for r in found]

    assert await status() == ["SCHEDULED"]
    await local_backend.create_mpps(MPPS_UID, minimal_create())
    assert await status() == ["STARTED"]
    await local_backend.update_mpps(MPPS_UID, completed_update())
    assert await status() == ["COMPLETED"]
    assert sql(local_backend, "SELECT status FROM sps") == [("COMPLETED",)]
    # A later MPPS of the same step that is discontinued does not un-complete it.
    other = "1.2.826.0.1.3680043.10.3.1"
    await local_backend.create_mpps(other, minimal_create())
    await local_backend.update_mpps(other, discontinued_update())
    assert await status() == ["COMPLETED"]


async def test_follow_up_can_be_switched_off(tmp_path: Path) -> None:
    settings = StoreSettings(path=tmp_path / "s.sqlite3", sps_status_follow_up=False)
    backend = await LocalBackend.open(settings)
    try:
        step = item(1, "Doe^Sally", sps_item(SPS_ID, "CTSCANNER", "CT", "20250101"))
        step["0020000D"] = attr("UI", STUDY_UID)
        await backend.upsert_worklist_items([step])
        await backend.create_mpps(MPPS_UID, minimal_create())
        assert sql(backend, "SELECT status FROM sps") == [("SCHEDULED",)]
    finally:
        await backend.aclose()


async def test_failed_update_rolls_back_everything(local_backend: LocalBackend) -> None:
    await local_backend.create_mpps(MPPS_UID, minimal_create())
    bad = completed_update()
    bad["00400340"] = {"vr": "SQ"}  # completing without a series: final state unmet
    with pytest.raises(GatewayError):
        await local_backend.update_mpps(MPPS_UID, bad)
    stored = await local_backend.retrieve_mpps(MPPS_UID)
    assert stored.dataset["00400252"]["Value"] == ["IN PROGRESS"]
    assert sql(local_backend, "SELECT final_at FROM mpps") == [(None,)]


async def test_purge_removes_old_steps_and_tombstones_final_mpps(tmp_path: Path) -> None:
    keep = RetentionSettings(sps_days=30, mpps_days=7)
    backend = await LocalBackend.open(StoreSettings(path=tmp_path / "r.sqlite3", retention=keep))
    try:
        now = datetime(2025, 3, 1, 12, 0)
        old, recent = "20250120", "20250215"
        await backend.upsert_worklist_items(
            [
                item(1, "Old^Step", sps_item("S1", "CT01", "CT", old)),
                item(2, "New^Step", sps_item("S2", "CT01", "CT", recent)),
            ]
        )
        await backend.create_mpps(MPPS_UID, minimal_create())
        await backend.update_mpps(MPPS_UID, completed_update())
        running = "1.2.826.0.1.3680043.10.3.2"
        await backend.create_mpps(running, minimal_create())

        nothing = await backend.purge(now)  # the MPPS became final just now
        assert (nothing.sps_deleted, nothing.mpps_deleted) == (1, 0)
        assert step_ids(await collect(backend, query())) == {"2"}

        later = await backend.purge(datetime.now() + timedelta(days=8))
        assert later.mpps_deleted == 1
        with pytest.raises(GatewayError) as caught:
            await backend.retrieve_mpps(MPPS_UID)
        assert caught.value.kind is ErrorKind.INSTANCE_GONE
        assert (await backend.retrieve_mpps(running)).dataset  # never final: kept
    finally:
        await backend.aclose()


async def test_run_retention_purges_periodically(tmp_path: Path) -> None:
    keep = RetentionSettings(sps_days=1, mpps_days=0, interval_s=0.01)
    settings = StoreSettings(path=tmp_path / "p.sqlite3", retention=keep)
    backend = await LocalBackend.open(settings)
    purge = backend.purge
    send, rounds = anyio.create_memory_object_stream[PurgeReport](100)

    async def observed(now: datetime, **periods: int | None) -> PurgeReport:
        report = await purge(now, **periods)
        await send.send(report)
        return report

    backend.purge = observed  # type: ignore[method-assign]
    try:
        async with anyio.create_task_group() as tg:
            for round_ in range(3):
                await backend.upsert_worklist_items(
                    [item(round_, "Old^Step", sps_item(f"S{round_}", "CT01", "CT", "20000101"))]
                )
                if round_ == 0:
                    tg.start_soon(run_retention, backend, settings)
                deleted = 0
                with anyio.fail_after(10):
                    while not deleted:  # rounds keep coming; one of them takes the step
                        deleted = (await rounds.receive()).sps_deleted
                assert deleted == 1
                assert await backend.count_worklist_items() == 0
            tg.cancel_scope.cancel()
    finally:
        send.close()
        rounds.close()
        await backend.aclose()


async def test_run_retention_returns_when_nothing_to_keep(local_backend: LocalBackend) -> None:
    with anyio.fail_after(5):
        await run_retention(local_backend, StoreSettings(path=local_backend.path))


async def test_demo_seeds_today_once(local_backend: LocalBackend) -> None:
    today = date(2025, 6, 2)
    assert await seed_demo(local_backend, today) == 7
    assert await seed_demo(local_backend, today) == 0
    ct = await collect(local_backend, query((STATION, "CT01"), (START_DATE, "20250602")))
    assert len(ct) == 3
    names = {r["00100010"]["Value"][0]["Alphabetic"] for r in ct}
    assert "Müller^Jürgen" in names
    assert len(await collect(local_backend, query((STATION, "MR01")))) == 3


async def test_reopen_keeps_data_and_closed_backend_refuses(tmp_path: Path) -> None:
    settings = StoreSettings(path=tmp_path / "sub" / "dir" / "g.sqlite3")
    first = await LocalBackend.open(settings)
    await first.upsert_worklist_items(WORKLIST)
    await first.aclose()
    with pytest.raises(GatewayError) as caught:
        await first.check_ready()
    assert caught.value.kind is ErrorKind.BUSY
    second = await LocalBackend.open(settings)
    try:
        assert await second.count_worklist_items() == 9
    finally:
        await second.aclose()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(GatewayError) as caught:
        await LocalBackend.open(StoreSettings(path=path))
    assert "newer" in str(caught.value)


async def test_unusable_path_is_a_configuration_error(tmp_path: Path) -> None:
    not_a_store = tmp_path / "notes.sqlite3"
    not_a_store.write_bytes(b"these are not the pages of a database\n" * 200)
    with pytest.raises(ConfigError) as caught:
        await LocalBackend.open(StoreSettings(path=not_a_store))
    assert caught.value.key == "store.path"
