"""The bulk import engine against the row engine: the same history files, full of good and
bad rows of every kind, imported into two identical time banks, one with each method. The
reports must be the same (every row accepted or rejected alike, with the same reason), and
so must every row of every table afterwards: entries, postings, balances, services,
confirmations, lots and their uses, pool lots, redemptions and gifts.

Three policies: the test world's (no cap, no expiry, one confirmation), one with a storage
cap whose excess goes to the pool, two confirmations, lots that expire, spouses redeeming
and a yearly gift limit, and one whose cap refuses and whose care needs age and need."""

from __future__ import annotations

import gc
import io
import random
import re
from collections.abc import Callable, Iterator
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from tests._databases import UrlFactory
from tests.bankworld import POLICY, PROGRAMME, World, build
from tests.clocks import Clock
from tests.dbdump import dump
from timebank import errors
from timebank.bank import Policy, TimeBank, _bulk_history, _io_api, _set_history
from timebank.bank._io import HISTORY_COLUMNS, ImportReport, RejectedRow
from timebank.bank._io_api import BULK_ENGINES, BulkEngine, ImportMethod

POLICIES = {
    "plain": POLICY,
    "capped-pool": POLICY.model_copy(
        update={
            "confirmations_required": 2,
            "lot_expiry_days": 20,
            "storage_cap_minutes": 900,
            "cap_excess": "pool",
            "spouse_redeems": True,
            "gift_yearly_limit_minutes": 300,
            "gift_relations": frozenset({"spouse", "child", "friend"}),
        }
    ),
    "capped-refuse": POLICY.model_copy(
        update={
            "storage_cap_minutes": 700,
            "cap_excess": "refuse",
            "redemption_rule": "age_and_need",
            "groups_donate_only": True,
        }
    ),
}
STATIONS = ("xinyuan-sw", "xinyuan-vol", "anci-sw")  # anci-sw is outside gy-admin's region
TYPES = ("body_care", "shopping", "chat", "dance")  # dance is in no catalogue


def populate(world: World) -> None:
    """More members (young, a group, frozen), relations and a frozen account, alike in every
    world."""
    bank = world.bank
    world.register("young", born=date(2001, 4, 4))
    world.register("needy", born=date(1990, 1, 1))
    world.register("club", kind="group")
    world.register("helper", acts_as="volunteer")
    world.register("frozen")
    m = world.members
    bank.set_assessed_need(m["needy"], in_need=True, operator="admin")
    bank.set_assessed_need(m["grandma"], in_need=True, operator="admin")
    bank.set_member_status(m["frozen"], "frozen", reason="test", operator="admin")
    bank.relate(m["wang"], m["li"], "spouse", operator="admin")
    bank.relate(m["zhao"], m["wang"], "child", operator="admin")
    bank.relate(m["young"], m["zhao"], "friend", operator="admin")
    bank.relate(m["grandma"], m["li"], "parent", operator="admin")
    # Care redeemed at this station lands on a frozen account: the ledger's refusal.
    bank.ledger.freeze(bank.site(PROGRAMME, "xinyuan-sw").redeemed_account, reason="audit")


def history(rng: random.Random, world: World, rows: int, keys: list[str]) -> str:
    """A history file: three rows in four plausible (some still refused: overlaps, caps,
    limits, shortfalls), the rest broken in every way the rules know. ``keys`` holds the
    keys of earlier files; some rows reuse them (replays, conflicts)."""
    m = world.members
    everyone = [*m.values(), 987654]
    active = [m[name] for name in ("wang", "li", "zhao", "young", "needy", "helper")]
    related = [(m["wang"], m["li"]), (m["li"], m["wang"]), (m["wang"], m["zhao"]),
               (m["zhao"], m["wang"]), (m["zhao"], m["young"]), (m["li"], m["grandma"])]
    now = world.clock.now
    lines = [",".join(HISTORY_COLUMNS)]
    for i in range(rows):
        good = rng.random() < 0.75
        key = rng.choice(keys) if keys and rng.random() < 0.08 else f"k{len(keys)}-{i}"
        when = now - timedelta(days=12) + timedelta(minutes=rng.randrange(12 * 24 * 60))
        if not good and rng.random() < 0.1:
            when = now + timedelta(hours=1)
        stamp = when.isoformat()
        kind = rng.choices(("service", "redemption", "gift"), (5, 3, 2))[0]
        member = rng.choice(active if good else everyone)
        if kind == "service":
            minutes = rng.choice((30, 60, 90, 120, 240) if good else (0, 60, 500))
            ended = (when + timedelta(minutes=minutes)).isoformat()
            people = [m["grandma"], m["needy"]] if good else everyone
            recipients = ";".join(str(rng.choice(people)) for _ in range(rng.choice((1, 2))))
            site = rng.choice(("xinyuan-sw", "xinyuan-vol") if good else
                              (*STATIONS, "sunrise", "nowhere"))
            kinds = TYPES[:3] if good else TYPES
            credited = "" if rng.random() < 0.8 else str(rng.choice((minutes, 2 * minutes, 7)))
            lines.append(
                f"{key},service,{member},{recipients},{site},{rng.choice(kinds)},"
                f"{stamp},{ended},{credited}"
            )
        elif kind == "redemption":
            recipient = "" if rng.random() < 0.7 else str(rng.choice(everyone))
            site = rng.choice(("sunrise", "xinyuan-sw") if good else ("sunrise", "nowhere"))
            service_type = rng.choice(TYPES[:3] if good else TYPES)
            lines.append(
                f"{key},redemption,{member},{recipient},{site},{service_type},"
                f"{stamp},,{rng.randrange(10, 300)}"
            )
        else:
            giver, receiver = rng.choice(related) if good else rng.sample(everyone, 2)
            lines.append(f"{key},gift,{giver},{receiver},,,{stamp},,{rng.randrange(10, 200)}")
    keys.extend(line.split(",", 1)[0] for line in lines[1:])
    return "\n".join(lines) + "\n"


def imported(
    bank: TimeBank,
    text: str,
    method: ImportMethod,
    batch_rows: int | None,
    skip: bool,
    *,
    confirmer: str | None = None,
) -> ImportReport:
    return bank.import_history(
        PROGRAMME,
        io.StringIO(text),
        operator="gy-admin",
        confirm_operator=confirmer,
        batch_rows=batch_rows,
        method=method,
        skip_rejected=skip,
    )


def worlds(factory: UrlFactory, backend: str, policy: Policy) -> tuple[World, list[World]]:
    """Identical time banks: one for the rows method, one for each bulk engine."""
    made = []
    for _ in range(1 + len(BULK_ENGINES)):
        world = build(factory(backend, migrated=True), Clock(), policy)
        populate(world)
        made.append(world)
    return made[0], made[1:]


def by_each_engine(
    monkeypatch: pytest.MonkeyPatch, bulk_worlds: list[World]
) -> Iterator[tuple[BulkEngine, World]]:
    """Each bulk engine with its own world, the engine the bulk method runs while its turn
    lasts (the rows world's import is made once and compared with each)."""
    for engine, world in zip(BULK_ENGINES, bulk_worlds, strict=True):
        monkeypatch.setattr(_io_api, "BULK_ENGINE", engine)
        yield engine, world


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("seed", range(4))
def test_bulk_and_rows_agree_row_for_row(
    fresh_db_url_factory: UrlFactory, policy: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows_world, bulk_worlds = worlds(fresh_db_url_factory, "sqlite", POLICIES[policy])
    rng = random.Random(seed)
    keys: list[str] = []
    rejected = applied = present = 0
    files = [history(rng, rows_world, 120, keys) for _ in range(3)]
    try:
        # The last import is the first file again: its accepted rows are replays.
        for number, text in enumerate((*files, files[0])):
            batch_rows = rng.choice((None, 1, 7, 40))
            skip = number in (0, len(files)) or rng.random() < 0.6
            # A confirmer of one station only: services elsewhere are refused its confirmation.
            confirmer = rng.choice((None, "conf-sw"))
            by_rows = imported(rows_world.bank, text, "rows", batch_rows, skip, confirmer=confirmer)
            everything = dump(rows_world.engine)
            for engine, world in by_each_engine(monkeypatch, bulk_worlds):
                by_bulk = imported(world.bank, text, "bulk", batch_rows, skip, confirmer=confirmer)
                assert by_bulk == by_rows, engine
                assert dump(world.engine) == everything, engine
            rejected += len(by_rows.rejected)
            applied += by_rows.applied
            present += by_rows.already_present
        # The files exercised both sides: neither everything refused nor everything taken.
        assert rejected > 20
        assert applied > 20
        assert present > 5
        for world in bulk_worlds:
            assert world.bank.ledger.verify().ok
    finally:
        for world in (rows_world, *bulk_worlds):
            world.bank.dispose()


Holdings = tuple[list[tuple[str, int]], list[tuple[object, ...]], list[tuple[object, ...]]]


def holdings(world: World) -> Holdings:
    """Every account's balance, every lot and every clearing row, without ids (PostgreSQL's
    sequences do not give back the ids of rows rolled back, so the two engines' ids differ
    there)."""
    with world.engine.connect() as conn:
        balances = sorted(
            (code, posted)
            for code, posted in conn.execute(
                sa.text("SELECT code, posted_minutes FROM tb_accounts")
            )
        )
        lots = sorted(
            tuple(r)
            for r in conn.execute(
                sa.text(
                    "SELECT member_id, minutes, remaining_minutes, origin_site_id, earned_on, "
                    "expires_on, parent_lot_id IS NULL FROM tb_lots"
                )
            )
        )
        clearing = sorted(
            tuple(r)
            for r in conn.execute(
                sa.text(
                    "SELECT r.idempotency_key, o.origin_site_id, o.programme_id, o.site_id, "
                    "o.occurred_at, o.minutes FROM tb_redemption_origins AS o "
                    "JOIN tb_redemptions AS r ON r.entry_id = o.entry_id"
                )
            )
        )
    return balances, lots, clearing


def unnumbered(row: RejectedRow) -> tuple[int, str, str]:
    return row.line, row.key, re.sub(r"service \d+", "service N", row.reason)


@pytest.mark.postgres
def test_bulk_and_rows_agree_on_postgres(
    fresh_db_url_factory: UrlFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bulk engines' PostgreSQL paths (COPY for large statements, arrays for small;
    temporary tables and their statistics)."""
    rows_world, bulk_worlds = worlds(fresh_db_url_factory, "postgres", POLICIES["capped-pool"])
    rng = random.Random(11)
    keys: list[str] = []
    try:
        for batch_rows in (None, 3, 100):
            text = history(rng, rows_world, 300, keys)
            by_rows = imported(rows_world.bank, text, "rows", batch_rows, True)
            for engine, world in by_each_engine(monkeypatch, bulk_worlds):
                by_bulk = imported(world.bank, text, "bulk", batch_rows, True)
                assert by_bulk.model_dump(exclude={"rejected"}) == by_rows.model_dump(
                    exclude={"rejected"}
                ), engine
                # Reasons alike, but for the service an overlap names: sequences give ids
                # that rows rolled back never get back, so the databases' ids differ.
                assert [unnumbered(r) for r in by_bulk.rejected] == [
                    unnumbered(r) for r in by_rows.rejected
                ], engine
                assert holdings(world) == holdings(rows_world), engine
        for world in bulk_worlds:
            assert world.bank.ledger.verify().ok
    finally:
        for world in (rows_world, *bulk_worlds):
            world.bank.dispose()


def watch_batch_writes(
    monkeypatch: pytest.MonkeyPatch, record: Callable[[sa.Connection], None]
) -> None:
    """Call ``record`` with each bulk batch's connection just before the batch is written,
    whichever engine runs."""
    write = _bulk_history._Batch.write
    write_set = _set_history._Engine.write

    def watched(batch: _bulk_history._Batch) -> None:
        record(batch.conn)
        write(batch)

    def watched_set(batch: _set_history._Engine, dialect: str) -> None:
        record(batch.conn)
        write_set(batch, dialect)

    monkeypatch.setattr(_bulk_history._Batch, "write", watched)
    monkeypatch.setattr(_set_history._Engine, "write", watched_set)


def test_a_bulk_batch_pauses_the_collector_and_hands_it_back(
    fresh_db_url_factory: UrlFactory, monkeypatch: pytest.MonkeyPatch,
    bulk_engine: BulkEngine,
) -> None:
    world = build(fresh_db_url_factory("sqlite", migrated=True), Clock(), POLICY)
    populate(world)
    seen: list[bool] = []
    watch_batch_writes(monkeypatch, lambda _conn: seen.append(gc.isenabled()))
    text = history(random.Random(7), world, 60, [])
    was = gc.isenabled()
    gc.enable()
    try:
        # All or nothing: a batch with a refused row is rolled back (raised out of the pause).
        kept = imported(world.bank, text, "bulk", 20, skip=False)
        assert kept.batches_committed < kept.batches, "a batch was rolled back"
        assert gc.isenabled()
        skipped = imported(world.bank, text, "bulk", 20, skip=True)
        assert skipped.batches_committed == skipped.batches
        assert gc.isenabled()
        assert seen, "batches were written"
        assert not any(seen), "every batch was written with the collector paused"
    finally:
        if not was:
            gc.disable()
        world.bank.dispose()


def test_the_judging_guard_turns_only_the_rules_refusals_into_a_rows() -> None:
    refusal = errors.InvalidInputError("the rule says no")
    with pytest.raises(_bulk_history._Refused) as refused, _bulk_history._refusing:
        raise refusal
    assert refused.value.reason == "the rule says no"
    assert refused.value.__suppress_context__
    storage = errors.StorageError("the database failed")
    with pytest.raises(errors.StorageError) as failed, _bulk_history._refusing:
        raise storage
    assert failed.value is storage
    with pytest.raises(KeyError), _bulk_history._refusing:
        raise KeyError("a bug, not a refusal")
    with _bulk_history._refusing:
        pass  # nothing raised: nothing to turn


@pytest.mark.parametrize("method", ["bulk", "rows"])
def test_an_import_releases_expired_holds_before_judging(
    fresh_db_url_factory: UrlFactory, bulk_engine: BulkEngine, method: ImportMethod
) -> None:
    """Minutes held on a member's account count against a redemption until the hold
    expires; then the import releases it first (under the account's lock, as every write
    of the ledger does) and the same redemption passes."""
    world = build(fresh_db_url_factory("sqlite", migrated=True), Clock(), POLICY)
    populate(world)
    bank, m = world.bank, world.members
    try:
        start = world.clock.now - timedelta(hours=3)
        service = (
            f"s1,service,{m['wang']},{m['grandma']},xinyuan-sw,body_care,"
            f"{start.isoformat()},{(start + timedelta(minutes=120)).isoformat()},"
        )
        header = ",".join(HISTORY_COLUMNS)
        assert imported(bank, f"{header}\n{service}\n", "bulk", None, False).applied == 1
        code = bank.member(m["wang"]).account
        earned = bank.ledger.balance(code).posted_minutes
        hold = bank.ledger.hold(
            "h1", debit=code, credit=bank.member(m["li"]).account, amount_minutes=earned - 10,
            code="test", operator="admin", expires_at=world.clock.now + timedelta(hours=1),
        )

        def redemption(key: str) -> str:
            when = (world.clock.now - timedelta(minutes=5)).isoformat()
            row = f"{key},redemption,{m['wang']},,sunrise,body_care,{when},,{earned - 5}"
            return f"{header}\n{row}\n"

        held = imported(bank, redemption("r1"), method, None, True)
        assert held.applied == 0
        assert [r.reason for r in held.rejected] == [
            f"member {m['wang']} has 10 minutes available, not the {earned - 5} this "
            "redemption takes"
        ]
        world.clock.advance(hours=2)
        freed = imported(bank, redemption("r2"), method, None, False)
        assert (freed.applied, freed.rejected) == (1, ())
        assert bank.ledger.get_hold(hold.id).status == "expired"
        assert bank.ledger.balance(code).posted_minutes == 5
        assert bank.ledger.verify().ok
    finally:
        bank.dispose()
