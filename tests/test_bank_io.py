"""Exports (CSV and JSON Lines, streamed, members without identity data) and the import of
a programme's history from CSV (every bad row reported, nothing written; batches; a second
import writes nothing). The main import and the streamed export run on SQLite, PostgreSQL
and MariaDB."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from tests.bankworld import PROGRAMME, SECRET, World, opened
from tests.dbdump import dump
from timebank import BankObjectNotFoundError, InvalidInputError, PermissionDeniedError
from timebank.bank import Policy, ServiceType, TimeBank
from timebank.bank._io import (
    ENTRY_COLUMNS,
    EXPORT_COLUMNS,
    HISTORY_COLUMNS,
    LOT_COLUMNS,
    MEMBER_COLUMNS,
    POSTING_COLUMNS,
    ImportReport,
    RejectedRow,
)
from timebank.bank._people import identity_hash
from timebank.models import TransferCommand

TABLES = ("entries", "postings", "members", "lots")
HEADER = ",".join(HISTORY_COLUMNS)


@pytest.fixture
def world(sqlite_url: str) -> Iterator[World]:
    yield from opened(sqlite_url)


@pytest.fixture
def any_world(db_url: str) -> Iterator[World]:
    yield from opened(db_url)


def bank(world: World) -> TimeBank:
    return world.bank


def export(world: World, table: str, fmt: str = "csv", **kw: Any) -> tuple[int, str]:
    out = io.StringIO()
    written = bank(world).export(table, out, format=fmt, **kw)  # type: ignore[arg-type]
    return written, out.getvalue()


def csv_rows(text: str) -> tuple[list[str], list[dict[str, str]]]:
    header, *rows = list(csv.reader(io.StringIO(text)))
    return header, [dict(zip(header, row, strict=True)) for row in rows]


def jsonl_rows(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def as_cell(value: Any) -> str:
    """A JSON Lines value as the CSV export writes it."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def history(*rows: str) -> io.StringIO:
    return io.StringIO("\n".join((HEADER, *rows)) + "\n")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def some_activity(world: World) -> None:
    """Two services confirmed (one by wang, one by li) and a redemption by wang."""
    first = world.serve("s1", "wang", "grandma", minutes=90, ago=timedelta(days=2))
    world.bank.confirm_service(first, operator="conf-sw")
    second = world.serve("s2", "li", "grandma", minutes=40, service_type="body_care")
    world.bank.confirm_service(second, operator="conf-sw")
    world.bank.redeem("r1", programme=PROGRAMME, member_id=world.members["wang"],
                      site="sunrise", service_type="body_care", minutes=30,
                      operator="sunrise-op")


# --- exports --------------------------------------------------------------------------------


def test_export_columns_are_the_documented_orders() -> None:
    assert ENTRY_COLUMNS == ("entry_id", "idempotency_key", "code", "occurred_at",
                             "recorded_at", "operator", "memo", "reverses_entry_id", "metadata")
    assert POSTING_COLUMNS == ("entry_id", "account", "account_type", "member_id",
                               "amount_minutes", "balance_after_minutes", "recorded_at")
    assert MEMBER_COLUMNS == ("member_id", "programme", "kind", "acts_as", "home_site", "status",
                              "registered_at", "birth_year", "sex", "balance_minutes")
    assert LOT_COLUMNS == ("lot_id", "member_id", "programme", "origin_site", "earned_on",
                           "expires_on", "minutes", "remaining_minutes", "source_entry_id",
                           "parent_lot_id")
    assert dict(EXPORT_COLUMNS) == dict(zip(TABLES, (ENTRY_COLUMNS, POSTING_COLUMNS,
                                                     MEMBER_COLUMNS, LOT_COLUMNS), strict=True))
    assert HISTORY_COLUMNS == ("key", "kind", "member", "recipient", "site", "service_type",
                               "started_at", "ended_at", "minutes")


@pytest.mark.parametrize("table", TABLES)
def test_csv_and_jsonl_carry_the_same_rows_in_the_documented_order(
    world: World, table: str
) -> None:
    some_activity(world)
    count, text = export(world, table, "csv")
    header, rows = csv_rows(text)
    assert header == list(EXPORT_COLUMNS[table])
    assert count == len(rows) > 0
    count_jsonl, text_jsonl = export(world, table, "jsonl")
    objects = jsonl_rows(text_jsonl)
    assert count_jsonl == count == len(objects)
    assert all(list(obj) == list(EXPORT_COLUMNS[table]) for obj in objects)
    assert [{k: as_cell(v) for k, v in obj.items()} for obj in objects] == rows


def test_exported_content_matches_the_bank(world: World) -> None:
    some_activity(world)
    wang, li = world.members["wang"], world.members["li"]
    entries = jsonl_rows(export(world, "entries", "jsonl")[1])
    assert [e["code"] for e in entries] == ["deposit", "deposit", "redemption"]
    deposit = entries[0]
    service = world.bank.service(deposit["metadata"]["service_id"])
    assert deposit["occurred_at"] == service.ended_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert deposit["recorded_at"] == "2026-11-02T09:00:00Z"
    assert deposit["metadata"]["credited_minutes"] == 90
    assert entries[2]["idempotency_key"] == "redemption:r1"

    postings = jsonl_rows(export(world, "postings", "jsonl")[1])
    assert len(postings) == 6
    for entry in entries:
        legs = [p for p in postings if p["entry_id"] == entry["entry_id"]]
        assert len(legs) == 2
        assert sum(p["amount_minutes"] for p in legs) == 0
    mine = [p for p in postings if p["member_id"] == wang]
    assert [(p["amount_minutes"], p["balance_after_minutes"]) for p in mine] == [(90, 90),
                                                                                  (-30, 60)]
    assert {p["account_type"] for p in mine} == {"member"}
    assert {p["account"] for p in postings if p["member_id"] is None} == {
        "langfang:xinyuan-sw:issued", "langfang:sunrise:redeemed"}

    members = {m["member_id"]: m for m in jsonl_rows(export(world, "members", "jsonl")[1])}
    assert members[wang] == {
        "member_id": wang, "programme": PROGRAMME, "kind": "person", "acts_as": "both",
        "home_site": "xinyuan-sw", "status": "active", "registered_at": "2026-11-02T09:00:00Z",
        "birth_year": 1960, "sex": None, "balance_minutes": 60,
    }
    for member_id, row in members.items():
        assert row["balance_minutes"] == world.bank.member(member_id).balance_minutes
    assert members[world.members["grandma"]]["birth_year"] == 1938

    lots = jsonl_rows(export(world, "lots", "jsonl")[1])
    expected: list[dict[str, Any]] = [
        {"lot_id": lot.id, "member_id": lot.member_id, "programme": PROGRAMME,
         "origin_site": lot.origin_site, "earned_on": lot.earned_on.isoformat(),
         "expires_on": None, "minutes": lot.minutes, "remaining_minutes": lot.remaining_minutes,
         "source_entry_id": lot.source_entry_id, "parent_lot_id": None}
        for member in (wang, li) for lot in world.bank.lots(member, open_only=False)
    ]
    assert sorted(lots, key=lambda lot: lot["lot_id"]) == sorted(
        expected, key=lambda lot: lot["lot_id"])


def test_members_are_exported_without_identity_data(world: World) -> None:
    people = {
        "sun": ("110101195503070012", "Sun Meilin", "13800138000", date(1955, 3, 7), "female"),
        "zhou": ("110101194812240034", "Zhou Guoqiang", "+86 139 1234 5678", date(1948, 12, 24),
                 "male"),
    }
    ids = {}
    for name, (identity, display, phone, born, sex) in people.items():
        ids[name] = bank(world).register_member(
            PROGRAMME, identity=identity, display_name=display, birth_date=born,
            home_site="xinyuan-sw", operator="rec-sw", phone=phone, sex=sex,  # type: ignore[arg-type]
        ).id
    for fmt in ("csv", "jsonl"):
        _, text = export(world, "members", fmt)
        for identity, display, phone, born, _sex in people.values():
            hashed = identity_hash(SECRET, identity)
            for secret in (identity, display, phone, hashed, hashed[:20], born.isoformat(),
                           born.strftime("%Y%m%d")):
                assert secret not in text, (fmt, secret)
        for name, member_id in ids.items():
            assert world.bank.member(member_id).account not in text
            assert str(people[name][3].year) in text
    rows = {int(r["member_id"]): r for r in csv_rows(export(world, "members")[1])[1]}
    assert (rows[ids["sun"]]["birth_year"], rows[ids["sun"]]["sex"]) == ("1955", "female")
    assert (rows[ids["zhou"]]["birth_year"], rows[ids["zhou"]]["sex"]) == ("1948", "male")


def test_exports_stream_in_small_fetches_and_filter_by_programme(any_world: World) -> None:
    world = any_world
    some_activity(world)
    ledger = world.bank.ledger
    ledger.open_account("core:a", "other", floor_minutes=None)
    ledger.open_account("core:b", "other", floor_minutes=None)
    ledger.post_many([
        TransferCommand(idempotency_key=f"core-{n}", code="transfer", debit="core:a",
                        credit="core:b", amount_minutes=n + 1, operator="op")
        for n in range(1_500)
    ])
    for table, total in (("entries", 1_503), ("postings", 3_006)):
        for fmt in ("csv", "jsonl"):
            whole = export(world, table, fmt)
            assert whole[0] == total
            assert export(world, table, fmt, rows_per_fetch=7) == whole
            assert export(world, table, fmt, rows_per_fetch=1) == whole
    count, text = export(world, "postings", "jsonl", programme=PROGRAMME, rows_per_fetch=2)
    assert count == 6
    assert all(p["account"].startswith("langfang:") for p in jsonl_rows(text))
    count, text = export(world, "entries", programme=PROGRAMME, rows_per_fetch=2)
    assert count == 3
    assert [r["code"] for r in csv_rows(text)[1]] == ["deposit", "deposit", "redemption"]
    assert export(world, "members", programme=PROGRAMME, rows_per_fetch=3)[0] == 4
    assert export(world, "lots", programme=PROGRAMME)[0] == 2


def test_export_refuses_bad_arguments_and_unknown_programmes(world: World) -> None:
    out = io.StringIO()
    with pytest.raises(BankObjectNotFoundError):
        bank(world).export("members", out, programme="nowhere")
    assert out.getvalue() == ""
    bad: list[dict[str, Any]] = [{"format": "xml"}, {"rows_per_fetch": 0},
                                 {"rows_per_fetch": 10_001}, {"rows_per_fetch": True}]
    for kwargs in bad:
        with pytest.raises(InvalidInputError):
            bank(world).export("members", out, **kwargs)
    with pytest.raises(InvalidInputError):
        bank(world).export("identities", out)  # type: ignore[arg-type]
    assert export(world, "lots")[1] == ",".join(LOT_COLUMNS) + "\n"  # empty: the header only
    assert export(world, "lots", "jsonl") == (0, "")


# --- imports --------------------------------------------------------------------------------


def good_history(world: World) -> list[str]:
    m = world.members
    return [
        # 01:00 to 03:00 UTC on 1 October: earned that day in the programme's calendar (UTC),
        # though the local day of the offset is 30 September. Chat: 120 * 1.5 = 180.
        f"old-001,service,{m['wang']},{m['grandma']},xinyuan-sw,chat,"
        "2026-09-30T22:00:00-03:00,2026-10-01T00:00:00-03:00,180",
        f"old-002,service,{m['li']},{m['grandma']},xinyuan-vol,body_care,"
        "2026-10-03T09:00:00+08:00,2026-10-03T10:30:00+08:00,",
        f"old-003,service,{m['wang']},{m['grandma']};{m['zhao']},xinyuan-sw,shopping,"
        "2026-10-10T08:00:00Z,2026-10-10T09:00:00Z,60",
        f"old-004,redemption,{m['wang']},,sunrise,body_care,2026-10-20T10:00:00Z,,200",
        f"old-005,redemption,{m['li']},{m['li']},xinyuan-sw,chat,2026-10-21T10:00:00+02:00,,30",
    ]


def test_a_history_file_applies_and_a_second_import_writes_nothing(any_world: World) -> None:
    world = any_world
    wang, li = world.members["wang"], world.members["li"]
    report = bank(world).import_history(PROGRAMME, history(*good_history(world)),
                                        operator="gy-admin")
    assert report == ImportReport(rows_read=5, applied=5, already_present=0, rejected=(),
                                  rolled_back=0, batches=1, batches_committed=1)
    assert report.ok
    assert (world.balance("wang"), world.balance("li")) == (40, 150)
    wang_lots = world.bank.lots(wang, open_only=False)
    assert [(lot.earned_on, lot.minutes, lot.remaining_minutes) for lot in wang_lots] == [
        (date(2026, 10, 1), 180, 0), (date(2026, 10, 10), 60, 40)]
    (li_lot,) = world.bank.lots(li, open_only=False)
    assert (li_lot.earned_on, li_lot.minutes, li_lot.remaining_minutes, li_lot.origin_site) == (
        date(2026, 10, 3), 180, 150, "xinyuan-vol")
    ledger = world.bank.ledger
    deposit = ledger.entry(wang_lots[0].source_entry_id)
    assert deposit.occurred_at == utc("2026-10-01T03:00:00Z")
    assert deposit.recorded_at == world.clock.now
    service = world.bank.service(deposit.metadata["service_id"])  # type: ignore[index]
    assert (service.idempotency_key, service.status, service.confirmed_by) == (
        "old-001", "confirmed", ("gy-admin",))
    assert (service.started_at, service.recorded_by) == (utc("2026-10-01T01:00:00Z"), "gy-admin")
    redemption = ledger.entry_by_key("redemption:old-004")
    assert redemption.occurred_at == utc("2026-10-20T10:00:00Z")
    assert ledger.entry_by_key("redemption:old-005").occurred_at == utc("2026-10-21T08:00:00Z")
    assert ledger.balance("langfang:sunrise:redeemed").posted_minutes == 200

    before = dump(world.engine)
    world.clock.advance(days=1)
    again = bank(world).import_history(PROGRAMME, history(*good_history(world)),
                                       operator="gy-admin", batch_rows=2)
    assert again == ImportReport(rows_read=5, applied=0, already_present=5, rejected=(),
                                 rolled_back=0, batches=3, batches_committed=3)
    assert dump(world.engine) == before


def test_every_bad_row_is_reported_and_nothing_is_written(world: World) -> None:
    m = world.members
    wang, li = m["wang"], m["li"]
    api = world.serve("api-1", "zhao", "grandma", minutes=60, ago=timedelta(days=5))
    world.bank.confirm_service(api, operator="conf-sw")
    svc = f"service,{wang},{m['grandma']},xinyuan-sw"
    rows = [
        f"g1,{svc},shopping,2026-10-01T09:00:00Z,2026-10-01T10:30:00Z,90",  # 2: good
        f"b1,service,abc,{m['grandma']},xinyuan-sw,shopping,2026-10-02T09:00Z,2026-10-02T10:00Z,",
        f"b2,{svc},shopping,2026-10-02T09:00:00,2026-10-02T10:00:00Z,",  # 4: no offset
        f"b3,bonus,{wang},{li},xinyuan-sw,shopping,2026-10-02T09:00Z,2026-10-02T10:00Z,",
        f"b4,service,9999,{m['grandma']},xinyuan-sw,chat,2026-10-02T09:00Z,2026-10-02T10:00Z,",
        f"b5,service,{li},{m['grandma']},nowhere,chat,2026-10-02T09:00Z,2026-10-02T10:00Z,",
        f"b6,{svc},dance,2026-10-03T09:00Z,2026-10-03T10:00Z,",  # 8
        f"b7,redemption,{wang},,sunrise,body_care,2026-10-04T09:00Z,,5000",
        f"g1,{svc},shopping,2026-10-05T09:00Z,2026-10-05T10:00Z,",  # 10: the key again
        "b8,service,1",
        f"b9,{svc},chat,2026-10-01T10:00:00Z,2026-10-01T11:00:00Z,",  # 12: overlaps g1
        f"b10,service,{li},{m['grandma']},xinyuan-sw,shopping,2026-10-02T09:00Z,"
        "2026-10-02T10:30Z,999",
        f"b11,redemption,{wang},,sunrise,body_care,2026-10-04T09:00Z,2026-10-04T10:00Z,30",
        f"api-1,{svc},shopping,2026-10-06T09:00Z,2026-10-06T10:00Z,",  # 15: other content
        f"b12,redemption,{wang},{m['grandma']},sunrise,body_care,2026-10-04T09:00Z,,10",
        f"b13,{svc},shopping,2026-12-01T09:00Z,2026-12-01T10:00Z,",  # 17: in the future
        f"g2,redemption,{wang},,sunrise,body_care,2026-10-04T09:00Z,,30",  # 18: good
        "",  # 19: a blank line is no row
        f'b14,{svc},"ch\nat",2026-10-07T09:00Z,2026-10-07T10:00Z,',  # 20 and 21
        f"g3,service,{li},{m['grandma']},xinyuan-sw,chat,2026-10-08T09:00Z,2026-10-08T10:00Z,90",
    ]
    before = dump(world.engine)
    report = bank(world).import_history(PROGRAMME, history(*rows), operator="gy-admin")
    assert dump(world.engine) == before
    expected = {
        3: ("b1", "member: 'abc' is not a member id"),
        4: ("b2", "started_at: '2026-10-02T09:00:00' has no UTC offset"),
        5: ("b3", "kind 'bonus' is not 'service', 'redemption' or 'gift'"),
        6: ("b4", "no member 9999"),
        7: ("b5", "no site 'nowhere'"),
        8: ("b6", "service type 'dance' is not in the catalogue"),
        9: ("b7", f"member {wang} has 90 minutes available, not the 5000"),
        10: ("g1", "key 'g1' is also on line 2"),
        11: ("b8", "3 fields where the header has 9"),
        12: ("b9", f"member {wang} already has service"),
        13: ("b10", "the service credits 90 minutes, not the 999 of the file"),
        14: ("b11", "ended_at: empty for a redemption"),
        15: ("api-1", "idempotency key 'api-1' was already used with different"),
        16: ("b12", f"pay for their own care, not member {m['grandma']}'s"),
        17: ("b13", "a service cannot start in the future"),
        20: ("b14", "service type 'ch\\nat' is not in the catalogue"),
    }
    assert [(r.line, r.key) for r in report.rejected] == [
        (line, key) for line, (key, _) in expected.items()]
    for row in report.rejected:
        assert expected[row.line][1] in row.reason, row
    assert "langfang:member" not in report.rejected[6].reason  # no account code: no hash
    assert (report.rows_read, report.applied, report.already_present, report.rolled_back) == (
        19, 0, 0, 3)
    assert (report.batches, report.batches_committed, report.ok) == (1, 0, False)


def test_the_rows_a_report_accepts_apply_once_the_rejected_ones_are_fixed(world: World) -> None:
    m = world.members
    good, bad = good_history(world), list(good_history(world))
    bad[1] = bad[1].replace("body_care", "massage")  # li's service: unknown type
    report = bank(world).import_history(PROGRAMME, history(*bad), operator="gy-admin")
    # li's redemption is refused too: without the service, li has no minutes.
    assert [(r.line, r.key) for r in report.rejected] == [(3, "old-002"), (6, "old-005")]
    assert report.rejected[1].reason == (
        f"member {m['li']} has 0 minutes available, not the 30 this redemption takes")
    fixed = bank(world).import_history(PROGRAMME, history(*good), operator="gy-admin")
    assert (fixed.applied, fixed.rejected) == (5, ())


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no header row: the file is empty"),
        (HEADER + ",note\n", "unknown columns 'note'"),
        (HEADER.replace(",minutes", "") + "\n", "missing columns minutes"),
        (HEADER + ",key\n", "repeated columns key"),
    ],
)
def test_a_bad_header_rejects_the_file(world: World, text: str, reason: str) -> None:
    before = dump(world.engine)
    source = io.StringIO(text + "k,service\n" if text else "")
    report = bank(world).import_history(PROGRAMME, source, operator="gy-admin")
    assert dump(world.engine) == before
    (row,) = report.rejected
    assert (row.line, row.key) == (1, "")
    assert reason in row.reason
    assert (report.rows_read, report.batches) == (0, 0)


def test_columns_in_any_order_a_byte_order_mark_and_crlf_lines(world: World) -> None:
    m = world.members
    header = "minutes,ended_at,started_at,service_type,site,recipient,member,kind,key"
    row = (f"60,2026-10-01T10:00Z,2026-10-01T09:00Z,shopping,xinyuan-sw,{m['grandma']},"
           f"{m['wang']},service,k1")
    source = io.StringIO("\ufeff" + header + "\r\n" + row + "\r\n", newline="")
    report = bank(world).import_history(PROGRAMME, source, operator="rec-sw",
                                        confirm_operator="conf-sw")
    assert (report.applied, report.rejected) == (1, ())
    (lot,) = world.bank.lots(m["wang"])
    assert (lot.minutes, lot.earned_on) == (60, date(2026, 10, 1))
    service = world.bank.service(world.bank.ledger.entry(lot.source_entry_id)
                                 .metadata["service_id"])  # type: ignore[index]
    assert (service.recorded_by, service.confirmed_by) == ("rec-sw", ("conf-sw",))


def test_batches_apply_alone_and_later_ones_are_judged_without_the_rolled_back(
    world: World,
) -> None:
    m = world.members
    wang, li, zhao, grandma = m["wang"], m["li"], m["zhao"], m["grandma"]

    def svc(key: str, member: int, day: int) -> str:
        return (f"{key},service,{member},{grandma},xinyuan-sw,shopping,"
                f"2026-10-{day:02}T09:00Z,2026-10-{day:02}T10:00Z,")

    def red(key: str, member: int, minutes: int) -> str:
        return f"{key},redemption,{member},,sunrise,body_care,2026-10-20T09:00Z,,{minutes}"

    rows = [
        svc("b1", wang, 1), red("b2", wang, 30),      # batch 1: committed
        svc("b3", 9999, 2), svc("b4", li, 2),         # batch 2: b3 rejected, rolled back
        svc("b5", zhao, 3), red("b6", li, 10),        # batch 3: b6 refused (b4 is not there)
        svc("b7", zhao, 4), red("b8", zhao, 10),      # batch 4: committed
    ]
    report = bank(world).import_history(PROGRAMME, history(*rows), operator="gy-admin",
                                        batch_rows=2)
    assert [(r.line, r.key) for r in report.rejected] == [(4, "b3"), (7, "b6")]
    assert "has 0 minutes available" in report.rejected[1].reason
    assert (report.rows_read, report.applied, report.already_present, report.rolled_back) == (
        8, 4, 0, 2)
    assert (report.batches, report.batches_committed) == (4, 2)
    assert (world.balance("wang"), world.balance("li"), world.balance("zhao")) == (30, 0, 50)

    rows[2] = svc("b3", wang, 2)
    fixed = bank(world).import_history(PROGRAMME, history(*rows), operator="gy-admin",
                                       batch_rows=3)
    assert fixed == ImportReport(rows_read=8, applied=4, already_present=4, rejected=(),
                                 rolled_back=0, batches=3, batches_committed=3)
    assert (world.balance("wang"), world.balance("li"), world.balance("zhao")) == (90, 50, 110)


def test_two_confirmations_are_recorded_where_the_policy_asks_for_them(world: World) -> None:
    io_bank = TimeBank(world.bank.ledger, identity_secrets={PROGRAMME: SECRET, "twice": b"s2"})
    policy = Policy(service_types={"chat": ServiceType(name="Chat")}, confirmations_required=2)
    io_bank.create_programme("twice", "Two confirmations", policy=policy, root_region="root",
                             root_region_name="Root", administrator="boss",
                             administrator_name="Boss")
    io_bank.add_site("twice", "st", "Station", kind="community_station", region="root",
                     operator="boss")
    ids = [io_bank.register_member("twice", identity=f"T-{n}", display_name=f"T{n}",
                                   birth_date=date(1950, 1, 1), home_site="st",
                                   operator="boss").id for n in (1, 2)]
    row = f"t1,service,{ids[0]},{ids[1]},st,chat,2026-10-01T09:00Z,2026-10-01T10:00Z,60"
    report = io_bank.import_history("twice", history(row), operator="boss")
    assert (report.applied, report.rejected) == (1, ())
    (lot,) = io_bank.lots(ids[0])
    service = io_bank.service(io_bank.ledger.entry(lot.source_entry_id)
                              .metadata["service_id"])  # type: ignore[index]
    assert (service.status, set(service.confirmed_by)) == ("confirmed", {f"member:{ids[1]}",
                                                                         "boss"})


def test_imports_refuse_unknown_programmes_operators_and_auditors(world: World) -> None:
    source = history()
    before = dump(world.engine)
    with pytest.raises(BankObjectNotFoundError):
        bank(world).import_history("nowhere", source, operator="gy-admin")
    with pytest.raises(BankObjectNotFoundError):
        bank(world).import_history(PROGRAMME, source, operator="gy-admin", confirm_operator="x")
    with pytest.raises(PermissionDeniedError):
        bank(world).import_history(PROGRAMME, source, operator="audit")
    with pytest.raises(InvalidInputError):
        bank(world).import_history(PROGRAMME, source, operator="gy-admin", batch_rows=0)
    assert dump(world.engine) == before
    empty = bank(world).import_history(PROGRAMME, history(), operator="gy-admin")
    assert empty == ImportReport(rows_read=0, applied=0, already_present=0, rejected=(),
                                 rolled_back=0, batches=0, batches_committed=0)


def test_an_operator_out_of_scope_is_reported_per_row(world: World) -> None:
    m = world.members
    row = (f"k1,service,{m['wang']},{m['grandma']},anci-sw,chat,"
           "2026-10-01T09:00Z,2026-10-01T10:00Z,")
    report = bank(world).import_history(PROGRAMME, history(row), operator="gy-admin")
    assert report.rejected == (RejectedRow(
        line=2, key="k1", reason="operator 'gy-admin' may not act as recorder at site 'anci-sw'"),)


def test_malformed_csv_is_reported_at_its_line(world: World) -> None:
    m = world.members
    good = (f"k2,service,{m['wang']},{m['grandma']},xinyuan-sw,chat,"
            "2026-10-01T09:00Z,2026-10-01T10:00Z,")
    source = history(f'k1,service,{m["wang"]},{m["grandma"]},xinyuan-sw,"chat"x,,,', good,
                     'k3,service,1,4,xinyuan-sw,"chat,2026-10-01T09:00Z')
    before = dump(world.engine)
    report = bank(world).import_history(PROGRAMME, source, operator="gy-admin")
    assert dump(world.engine) == before
    assert [(r.line, r.key, r.reason) for r in report.rejected] == [
        (2, "", "not valid CSV: ',' expected after '\"'"),
        (4, "", "not valid CSV: unexpected end of data"),
    ]
    assert (report.rows_read, report.rolled_back) == (3, 1)
