"""The time bank, part 1: every rule, every refusal (each checked to change nothing), and
idempotent retries of every command, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from tests.bankworld import POLICY, PROGRAMME, SECRET, World, fresh, race, refused
from tests.clocks import Clock
from tests.dbdump import dump
from timebank import (
    AccountStateError,
    BankObjectNotFoundError,
    ExistsError,
    IdempotencyConflictError,
    InvalidInputError,
    MemberStateError,
    OverlappingServiceError,
    PermissionDeniedError,
    PolicyViolationError,
    ServiceStateError,
    TimebankError,
)
from timebank.bank import Policy, ServiceType, TimeBank, _lots, _org, credited_minutes


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    w = fresh(db_url, Clock())
    try:
        yield w
    finally:
        w.bank.dispose()


# --- organisations -------------------------------------------------------------------------


def test_programme_is_created_once_and_replayed(world: World) -> None:
    again = world.bank.create_programme(
        PROGRAMME,
        "Langfang time bank",
        policy=POLICY,
        root_region="hebei",
        root_region_name="Hebei",
        administrator="admin",
        administrator_name="Provincial administrator",
    )
    assert again.root_region == "hebei"
    assert again.expired_account == "langfang:expired"
    err = refused(
        world,
        ExistsError,
        lambda: world.bank.create_programme(
            PROGRAMME,
            "Another name",
            policy=POLICY,
            root_region="hebei",
            root_region_name="Hebei",
            administrator="admin",
            administrator_name="Provincial administrator",
        ),
    )
    assert err.fields == ("name",)


def test_sites_open_their_ledger_accounts(world: World) -> None:
    station = world.bank.site(PROGRAMME, "xinyuan-sw")
    institution = world.bank.site(PROGRAMME, "sunrise")
    assert station.issued_account == "langfang:xinyuan-sw:issued"
    assert station.redeemed_account == "langfang:xinyuan-sw:redeemed"
    assert institution.issued_account is None  # institutions take minutes in, never issue
    assert world.bank.region(PROGRAMME, "xinyuan").pool_account == "langfang:xinyuan:pool"
    ledger = world.bank.ledger
    assert ledger.account("langfang:xinyuan-sw:issued").floor_minutes is None
    assert ledger.account("langfang:xinyuan:pool").floor_minutes == 0


def test_region_levels_go_downwards(world: World) -> None:
    refused(
        world,
        InvalidInputError,
        lambda: world.bank.add_region(
            PROGRAMME, "bad", "Bad", level="city", parent="guangyang", operator="admin"
        ),
    )


def test_programmes_in_one_database_are_separate(world: World) -> None:
    bank = TimeBank(world.bank.ledger, identity_secrets={PROGRAMME: SECRET, "gansu": b"other"})
    bank.create_programme(
        "gansu",
        "Gansu time bank",
        policy=POLICY,
        root_region="gansu",
        root_region_name="Gansu",
        administrator="admin",
        administrator_name="Gansu administrator",
    )
    bank.add_site(
        "gansu", "xinyuan-sw", "Same code, other programme", kind="social_work_station",
        region="gansu", operator="admin",
    )
    twin = bank.register_member(
        "gansu", identity="ID-wang", display_name="Wang", birth_date=date(1960, 5, 1),
        home_site="xinyuan-sw", operator="admin",
    )
    assert twin.id != world.members["wang"]
    assert twin.account != world.bank.member(world.members["wang"]).account
    # Langfang's operators do not exist in Gansu; Gansu's administrator is not Langfang's.
    refused(
        world,
        BankObjectNotFoundError,
        lambda: bank.register_member(
            "gansu", identity="ID-x", display_name="X", birth_date=date(1960, 1, 1),
            home_site="xinyuan-sw", operator="rec-sw",
        ),
    )
    start = world.clock.now - timedelta(hours=2)
    refused(
        world,
        BankObjectNotFoundError,
        lambda: bank.record_service(
            "cross", programme="gansu", volunteer_id=twin.id,
            recipient_ids=[world.members["grandma"]], site="xinyuan-sw",
            service_type="shopping", started_at=start, ended_at=start + timedelta(hours=1),
            operator="admin",
        ),
    )


# --- members -------------------------------------------------------------------------------


def test_identity_is_stored_only_as_a_keyed_hash(world: World) -> None:
    wang = world.members["wang"]
    everything = repr(dump(world.engine))
    assert "ID-WANG" not in everything.upper()
    assert world.bank.find_member(PROGRAMME, identity="ID-wang").id == wang
    assert world.bank.find_member(PROGRAMME, identity=" id-wang ").id == wang  # normalised
    other_secret = TimeBank(world.bank.ledger, identity_secrets={PROGRAMME: b"wrong"})
    with pytest.raises(BankObjectNotFoundError):
        other_secret.find_member(PROGRAMME, identity="ID-wang")
    with pytest.raises(InvalidInputError, match="no identity secret"):
        TimeBank(world.bank.ledger, identity_secrets={}).find_member(PROGRAMME, identity="x")


def test_personal_data_lives_apart_from_the_ledger(world: World) -> None:
    wang = world.members["wang"]
    data = world.bank.personal_data(wang)
    assert (data.display_name, data.birth_date, data.phone) == ("Wang", date(1960, 5, 1), None)
    with world.engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("tb_members")}
    assert not columns & {"display_name", "birth_date", "phone"}


def test_registering_again_is_a_replay_and_other_data_a_conflict(world: World) -> None:
    again = world.register("wang")
    assert again == world.members["wang"]
    err = refused(
        world,
        ExistsError,
        lambda: world.bank.register_member(
            PROGRAMME, identity="ID-wang", display_name="Somebody else",
            birth_date=date(1960, 5, 1), home_site="xinyuan-sw", operator="rec-sw",
        ),
    )
    assert err.fields == ("display_name",)


def test_relations_are_kept_both_ways(world: World) -> None:
    wang, li = world.members["wang"], world.members["li"]
    world.bank.relate(wang, li, "parent", operator="rec-sw")
    world.bank.relate(wang, li, "parent", operator="rec-sw")  # a replay
    assert world.bank.relations(wang) == {li: "parent"}
    assert world.bank.relations(li) == {wang: "child"}
    refused(world, ExistsError, lambda: world.bank.relate(wang, li, "friend", operator="rec-sw"))
    refused(world, InvalidInputError, lambda: world.bank.relate(wang, wang, "friend",
                                                                operator="rec-sw"))


def test_a_frozen_or_deceased_member_takes_no_part(world: World) -> None:
    wang, grandma = world.members["wang"], world.members["grandma"]
    view = world.bank.set_member_status(wang, "frozen", reason="audit", operator="gy-admin")
    assert (view.status, view.status_reason) == ("frozen", "audit")
    assert world.bank.ledger.account(view.account).status == "frozen"
    refused(world, MemberStateError, lambda: world.serve("s1", "wang", "grandma"))
    world.bank.set_member_status(wang, "active", reason="cleared", operator="gy-admin")
    world.bank.set_member_status(grandma, "deceased", reason="passed away", operator="gy-admin")
    refused(world, MemberStateError, lambda: world.serve("s1", "wang", "grandma"))
    refused(
        world,
        MemberStateError,
        lambda: world.bank.set_member_status(grandma, "active", reason="x", operator="gy-admin"),
    )


def test_closing_a_member_needs_an_empty_account(world: World) -> None:
    wang = world.members["wang"]
    service = world.serve("s1", "wang", "li")
    world.bank.confirm_service(service, operator="conf-sw")
    refused(
        world,
        AccountStateError,
        lambda: world.bank.set_member_status(wang, "closed", reason="moved", operator="gy-admin"),
    )
    li = world.members["zhao"]
    closed = world.bank.set_member_status(li, "closed", reason="moved", operator="gy-admin")
    assert world.bank.ledger.account(closed.account).status == "closed"


# --- permissions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "site"),
    [
        ("rec-sw", "xinyuan-vol"),  # a recorder of another station
        ("rec-anci", "xinyuan-sw"),  # a recorder in another county
        ("conf-sw", "xinyuan-sw"),  # a confirmer is not a recorder
        ("sunrise-op", "xinyuan-sw"),  # an institution's redeemer
        ("audit", "xinyuan-sw"),  # an auditor never writes, whatever else it may do
    ],
)
def test_nobody_records_where_they_do_not_belong(world: World, operator: str, site: str) -> None:
    refused(
        world,
        PermissionDeniedError,
        lambda: world.serve("s1", "wang", "grandma", site=site, operator=operator),
    )


def test_a_region_administrator_acts_for_everything_under_it(world: World) -> None:
    service = world.serve("s1", "wang", "grandma", operator="gy-admin")
    assert world.bank.confirm_service(service, operator="gy-admin").status == "confirmed"
    refused(
        world,
        PermissionDeniedError,
        lambda: world.serve("s2", "li", "grandma", site="anci-sw", operator="gy-admin"),
    )


def test_corrections_freezes_and_policy_need_a_region_administrator(world: World) -> None:
    service = world.serve("s1", "wang", "grandma")
    world.bank.confirm_service(service, operator="conf-sw")
    wang = world.members["wang"]
    for operator in ("rec-sw", "conf-sw", "rec-vol"):

        def reverse(op: str = operator) -> object:
            return world.bank.reverse_service(service, reason="x", operator=op)

        def freeze(op: str = operator) -> object:
            return world.bank.set_member_status(wang, "frozen", reason="x", operator=op)

        refused(world, PermissionDeniedError, reverse)
        refused(world, PermissionDeniedError, freeze)
    later = world.clock.now + timedelta(days=1)
    refused(
        world,
        PermissionDeniedError,
        lambda: world.bank.set_policy(PROGRAMME, POLICY, effective_from=later, operator="gy-admin"),
    )
    assert world.bank.set_policy(
        PROGRAMME, POLICY, effective_from=later, operator="admin"
    ).version == 2


def test_an_institution_operator_cannot_confirm_a_station_service(world: World) -> None:
    service = world.serve("s1", "wang", "grandma")
    refused(
        world,
        PermissionDeniedError,
        lambda: world.bank.confirm_service(service, operator="sunrise-op"),
    )


def test_an_unknown_operator_is_not_found(world: World) -> None:
    err = refused(world, BankObjectNotFoundError, lambda: world.serve("s1", "wang", "grandma",
                                                                      operator="nobody"))
    assert err.kind == "operator"


# --- services and weights ------------------------------------------------------------------


def test_a_confirmed_service_deposits_weighted_minutes_and_makes_a_lot(world: World) -> None:
    service_id = world.serve("s1", "wang", "grandma", minutes=90, service_type="body_care")
    pending = world.bank.service(service_id)
    assert (pending.status, pending.raw_minutes, pending.credited_minutes) == ("pending", 90, 180)
    assert world.balance("wang") == 0  # only a confirmation posts
    confirmed = world.bank.confirm_service(service_id, operator="conf-sw")
    assert confirmed.status == "confirmed"
    assert confirmed.confirmed_by == ("conf-sw",)
    entry = world.bank.ledger.entry(confirmed.deposit_entry_id or 0)
    assert entry.code == "deposit"
    assert entry.operator == "conf-sw"
    assert entry.occurred_at == pending.ended_at
    assert entry.metadata is not None
    assert (entry.metadata["raw_minutes"], entry.metadata["weight_permille"],
            entry.metadata["credited_minutes"]) == (90, 2000, 180)
    assert world.balance("wang") == 180
    [lot] = world.bank.lots(world.members["wang"])
    assert (lot.minutes, lot.remaining_minutes, lot.origin_site) == (180, 180, "xinyuan-sw")
    assert lot.earned_on == pending.ended_at.date()
    assert lot.expires_on is None
    issued = world.bank.ledger.balance("langfang:xinyuan-sw:issued").posted_minutes
    assert issued == -180


def test_the_rounding_rule_is_down(world: World) -> None:
    service_id = world.serve("s1", "wang", "grandma", minutes=45, service_type="chat")
    assert world.bank.service(service_id).credited_minutes == 67  # 45 * 1.5 = 67.5
    assert credited_minutes(45, 1500) == 67
    assert credited_minutes(1, 999) == 0


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("ends_before_start", InvalidInputError),
        ("starts_in_future", InvalidInputError),
        ("too_long", PolicyViolationError),
        ("serves_self", InvalidInputError),
        ("unknown_type", PolicyViolationError),
        ("at_institution", InvalidInputError),
        ("recipient_only_volunteer", MemberStateError),
        ("naive_time", InvalidInputError),
    ],
)
def test_services_that_are_refused(world: World, case: str, error: type[TimebankError]) -> None:
    m = world.members
    now = world.clock.now
    fields: dict[str, object] = {
        "programme": PROGRAMME,
        "volunteer_id": m["wang"],
        "recipient_ids": [m["grandma"]],
        "site": "xinyuan-sw",
        "service_type": "shopping",
        "started_at": now - timedelta(hours=3),
        "ended_at": now - timedelta(hours=2),
        "operator": "rec-sw",
    }
    changes: dict[str, dict[str, object]] = {
        "ends_before_start": {"ended_at": now - timedelta(hours=4)},
        "starts_in_future": {"started_at": now + timedelta(hours=1),
                             "ended_at": now + timedelta(hours=2)},
        "too_long": {"started_at": now - timedelta(hours=9), "ended_at": now},
        "serves_self": {"recipient_ids": [m["wang"]]},
        "unknown_type": {"service_type": "gardening"},
        "at_institution": {"site": "sunrise", "operator": "gy-admin"},
        "recipient_only_volunteer": {"volunteer_id": m["grandma"], "recipient_ids": [m["li"]]},
        "naive_time": {"started_at": (now - timedelta(hours=3)).replace(tzinfo=None)},
    }
    fields.update(changes[case])
    refused(world, error, lambda: world.bank.record_service("s1", **fields))  # type: ignore[arg-type]


def test_overlapping_services_of_one_volunteer_are_refused(world: World) -> None:
    first = world.serve("s1", "wang", "grandma", minutes=60, ago=timedelta(hours=3))
    err = refused(
        world,
        OverlappingServiceError,
        lambda: world.serve("s2", "wang", "li", minutes=60, ago=timedelta(hours=2, minutes=30)),
    )
    assert err.other_service_id == first
    # Back to back is not an overlap; another volunteer at the same time is fine.
    world.serve("s3", "wang", "li", minutes=60, ago=timedelta(hours=2))
    world.serve("s4", "li", "grandma", minutes=60, ago=timedelta(hours=3))
    # A rejected service frees its time.
    world.bank.reject_service(first, reason="never happened", operator="conf-sw")
    world.serve("s5", "wang", "zhao", minutes=30, ago=timedelta(hours=3))


def test_recording_again_is_a_replay_and_other_content_a_conflict(world: World) -> None:
    first = world.serve("s1", "wang", "grandma")
    before = dump(world.engine)
    assert world.serve("s1", "wang", "grandma") == first
    assert dump(world.engine) == before
    err = refused(world, IdempotencyConflictError, lambda: world.serve("s1", "wang", "grandma",
                                                                       minutes=30))
    assert err.fields == ("ended_at",)


def test_confirming_again_is_a_replay(world: World) -> None:
    service = world.serve("s1", "wang", "grandma")
    confirmed = world.bank.confirm_service(service, operator="conf-sw")
    before = dump(world.engine)
    assert world.bank.confirm_service(service, operator="conf-sw") == confirmed
    assert world.bank.confirm_service(service, operator="rec-sw",
                                      recipient_id=world.members["grandma"]) == confirmed
    assert dump(world.engine) == before
    assert world.balance("wang") == 60


def test_a_rejected_service_posts_nothing_and_stays_rejected(world: World) -> None:
    service = world.serve("s1", "wang", "grandma")
    rejected = world.bank.reject_service(service, reason="no show", operator="conf-sw")
    assert (rejected.status, rejected.reason, rejected.deposit_entry_id) == (
        "rejected", "no show", None
    )
    assert world.bank.reject_service(service, reason="no show", operator="conf-sw") == rejected
    refused(world, ServiceStateError, lambda: world.bank.confirm_service(service,
                                                                         operator="conf-sw"))
    refused(world, ServiceStateError, lambda: world.bank.reject_service(
        service, reason="other", operator="conf-sw"))
    assert world.balance("wang") == 0


def test_a_recipient_who_did_not_receive_cannot_confirm(world: World) -> None:
    service = world.serve("s1", "wang", "grandma")
    refused(world, InvalidInputError, lambda: world.bank.confirm_service(
        service, operator="rec-sw", recipient_id=world.members["li"]))


def test_two_confirmations_when_the_policy_says_so(world: World) -> None:
    before_change = world.serve("old", "li", "grandma", ago=timedelta(hours=5))
    strict = POLICY.model_copy(update={"confirmations_required": 2})
    world.bank.set_policy(PROGRAMME, strict, effective_from=world.clock.now, operator="admin")
    world.clock.advance(hours=3)
    service = world.serve("s1", "wang", "grandma")
    assert world.bank.service(service).policy_version == 2
    half = world.bank.confirm_service(service, operator="conf-sw")
    assert (half.status, world.balance("wang")) == ("pending", 0)
    full = world.bank.confirm_service(service, operator="rec-sw",
                                      recipient_id=world.members["grandma"])
    assert full.status == "confirmed"
    assert set(full.confirmed_by) == {"conf-sw", f"member:{world.members['grandma']}"}
    # The deposit names the operator who entered the confirmation that completed it.
    assert world.bank.ledger.entry(full.deposit_entry_id or 0).operator == "rec-sw"
    # A service that started under version 1 needs one confirmation still.
    assert world.bank.confirm_service(before_change, operator="conf-sw").status == "confirmed"


def test_confirm_due_confirms_after_the_policy_delay(world: World) -> None:
    service = world.serve("s1", "wang", "grandma", minutes=60, ago=timedelta(hours=2))
    ended = world.bank.service(service).ended_at
    world.clock.advance(days=2)
    assert world.bank.confirm_due(PROGRAMME, as_of=ended + timedelta(hours=23),
                                  operator="gy-admin") == 0
    refused(world, InvalidInputError, lambda: world.bank.confirm_due(
        PROGRAMME, as_of=world.clock.now + timedelta(seconds=1), operator="gy-admin"))
    refused(world, PermissionDeniedError, lambda: world.bank.confirm_due(
        PROGRAMME, as_of=world.clock.now, operator="rec-sw"))
    assert world.bank.confirm_due(PROGRAMME, as_of=world.clock.now, operator="gy-admin") == 1
    assert world.bank.confirm_due(PROGRAMME, as_of=world.clock.now, operator="gy-admin") == 0
    view = world.bank.service(service)
    assert (view.status, view.confirmed_by) == ("confirmed", ("gy-admin",))
    assert world.balance("wang") == 60


def test_confirm_due_stays_in_the_operators_scope(world: World) -> None:
    world.serve("s1", "wang", "grandma")
    world.clock.advance(days=2)
    assert world.bank.confirm_due(PROGRAMME, as_of=world.clock.now, operator="rec-anci") == 0
    assert world.bank.confirm_due(PROGRAMME, as_of=world.clock.now, operator="conf-sw") == 1


def test_a_reversal_takes_the_minutes_back_from_the_lot(world: World) -> None:
    first = world.serve("s1", "wang", "grandma", ago=timedelta(hours=5))
    second = world.serve("s2", "wang", "grandma", ago=timedelta(hours=3), minutes=30)
    for service in (first, second):
        world.bank.confirm_service(service, operator="conf-sw")
    reversed_ = world.bank.reverse_service(second, reason="recorded twice", operator="gy-admin")
    assert reversed_.status == "reversed"
    assert world.bank.reverse_service(second, reason="recorded twice",
                                      operator="gy-admin") == reversed_
    wang = world.members["wang"]
    assert world.balance("wang") == 60 == world.bank.lots_total(wang)
    assert [(lot.minutes, lot.remaining_minutes) for lot in world.bank.lots(wang)] == [(60, 60)]
    pending = world.serve("s3", "wang", "grandma", ago=timedelta(hours=1), minutes=10)
    refused(world, ServiceStateError, lambda: world.bank.reverse_service(
        pending, reason="pending", operator="gy-admin"))


# --- lots and policy versions --------------------------------------------------------------


def test_lots_are_consumed_first_in_first_out(world: World) -> None:
    for key, hours in (("a", 30), ("b", 5)):
        service = world.serve(key, "wang", "grandma", ago=timedelta(hours=hours))
        world.bank.confirm_service(service, operator="conf-sw")
    wang = world.members["wang"]
    older, newer = world.bank.lots(wang)
    assert older.earned_on < newer.earned_on
    with world.bank.ledger.transaction() as tx:
        taken = _lots.consume(tx.connection, wang, 90)
    assert taken == [(older.id, 60), (newer.id, 30)]
    assert [lot.remaining_minutes for lot in world.bank.lots(wang, open_only=False)] == [0, 30]


def test_policy_versions_apply_from_their_date_and_never_rewrite_history(world: World) -> None:
    refused(world, PolicyViolationError, lambda: world.bank.set_policy(
        PROGRAMME, POLICY, effective_from=world.clock.now - timedelta(days=1), operator="admin"))
    expiring = Policy(
        service_types={"shopping": ServiceType(name="Shopping", weight_permille=1000)},
        lot_expiry_days=365,
    )
    start = world.clock.now + timedelta(hours=1)
    v2 = world.bank.set_policy(PROGRAMME, expiring, effective_from=start, operator="admin")
    assert world.bank.set_policy(PROGRAMME, expiring, effective_from=start,
                                 operator="admin") == v2
    refused(world, ExistsError, lambda: world.bank.set_policy(
        PROGRAMME, POLICY, effective_from=start, operator="admin"))
    assert world.bank.policy(PROGRAMME).version == 1
    assert world.bank.policy(PROGRAMME, at=start).version == 2
    early = world.serve("early", "li", "grandma", service_type="body_care")
    world.clock.advance(hours=4)
    late = world.serve("late", "wang", "grandma")
    refused(world, PolicyViolationError, lambda: world.serve("late2", "zhao", "grandma",
                                                             service_type="body_care"))
    for service in (early, late):
        world.bank.confirm_service(service, operator="conf-sw")
    assert world.balance("li") == 120  # body care at version 1's weight
    [lot] = world.bank.lots(world.members["wang"])
    assert lot.expires_on == lot.earned_on + timedelta(days=365)


def test_a_policy_is_validated(world: World) -> None:
    with pytest.raises(InvalidInputError, match="at least one service type"):
        Policy(service_types={})
    with pytest.raises(InvalidInputError):
        ServiceType(name="x", weight_permille=0)
    with pytest.raises(InvalidInputError):
        Policy(service_types={"a": ServiceType(name="a")}, confirmations_required=3)


def test_lots_are_dated_in_the_programmes_time_zone(world: World) -> None:
    local = POLICY.model_copy(update={"timezone": "Asia/Shanghai"})
    world.bank.set_policy(PROGRAMME, local, effective_from=world.clock.now, operator="admin")
    world.clock.now = world.clock.now.replace(hour=23, minute=45)  # 07:45 next day in Langfang
    service = world.serve("late", "wang", "grandma", ago=timedelta(minutes=60), minutes=30)
    world.bank.confirm_service(service, operator="conf-sw")
    [lot] = world.bank.lots(world.members["wang"])
    assert lot.earned_on == world.clock.now.date() + timedelta(days=1)
    with pytest.raises(InvalidInputError, match="unknown time zone"):
        Policy(**{**POLICY.model_dump(), "timezone": "Mars/Olympus"})


def test_organisation_commands_replay_and_name_their_conflicts(world: World) -> None:
    bank = world.bank
    before = dump(world.engine)
    bank.add_region(PROGRAMME, "anci", "Anci", level="county", parent="langfang-city",
                    operator="admin")
    bank.add_site(PROGRAMME, "anci-sw", "Anci social-work station", kind="social_work_station",
                  region="anci", operator="admin")
    bank.add_operator(PROGRAMME, "rec-sw", "Recorder", roles=["recorder"], site="xinyuan-sw",
                      by="gy-admin")
    assert dump(world.engine) == before
    err = refused(world, ExistsError, lambda: bank.add_region(
        PROGRAMME, "anci", "Anci", level="county", parent="hebei", operator="admin"))
    assert (err.kind, err.fields) == ("region", ("parent",))
    err = refused(world, ExistsError, lambda: bank.add_site(
        PROGRAMME, "anci-sw", "Anci", kind="volunteer_station", region="anci", operator="admin"))
    assert err.fields == ("name", "kind")
    err = refused(world, ExistsError, lambda: bank.add_operator(
        PROGRAMME, "rec-sw", "Recorder", roles=["recorder", "confirmer"], site="xinyuan-sw",
        by="gy-admin"))
    assert err.fields == ("roles",)
    refused(world, InvalidInputError, lambda: bank.add_operator(
        PROGRAMME, "x", "X", roles=["recorder"], site="xinyuan-sw", region="xinyuan",
        by="gy-admin"))
    refused(world, InvalidInputError, lambda: bank.add_site(
        PROGRAMME, "bad code!", "X", kind="social_work_station", region="anci", operator="admin"))


def test_concurrent_overlapping_records_end_with_one_service(world: World) -> None:
    """Threads record overlapping services of one volunteer at once: the volunteer's row
    lock lets exactly one through; the others are refused, never both written."""
    start = world.clock.now - timedelta(hours=3)
    outcomes = race(4, lambda n: world.bank.record_service(
        f"race-{n}", programme=PROGRAMME, volunteer_id=world.members["wang"],
        recipient_ids=[world.members["grandma"]], site="xinyuan-sw", service_type="shopping",
        started_at=start + timedelta(minutes=n), ended_at=start + timedelta(minutes=60 + n),
        operator="rec-sw").id, (OverlappingServiceError,))
    winners = [o for o in outcomes if isinstance(o, int)]
    assert len(winners) == 1, outcomes


def test_a_volunteer_group_is_a_member_too(world: World) -> None:
    team = world.bank.register_member(
        PROGRAMME, identity="ORG-91131000", display_name="Xinyuan youth team",
        birth_date=date(2015, 6, 1), home_site="xinyuan-sw", operator="rec-sw", kind="group",
        acts_as="volunteer",
    )
    world.members["team"] = team.id
    assert (team.kind, team.acts_as) == ("group", "volunteer")
    service = world.serve("s1", "team", "grandma", minutes=120)
    world.bank.confirm_service(service, operator="conf-sw")
    assert world.balance("team") == 120
    refused(world, MemberStateError, lambda: world.serve("s2", "li", "team"))  # never a recipient


@pytest.mark.parametrize("rating", [0, 6, True, 2.5])
def test_a_rating_is_one_to_five(world: World, rating: object) -> None:
    start = world.clock.now - timedelta(hours=2)
    refused(world, InvalidInputError, lambda: world.bank.record_service(
        "s1", programme=PROGRAMME, volunteer_id=world.members["wang"],
        recipient_ids=[world.members["grandma"]], site="xinyuan-sw", service_type="shopping",
        started_at=start, ended_at=start + timedelta(hours=1), operator="rec-sw",
        rating=rating))  # type: ignore[arg-type]
    rated = world.bank.record_service(
        "s2", programme=PROGRAMME, volunteer_id=world.members["wang"],
        recipient_ids=[world.members["grandma"]], site="xinyuan-sw", service_type="shopping",
        started_at=start, ended_at=start + timedelta(hours=1), operator="rec-sw", rating=5,
        note="brought the groceries up four floors")
    assert (rated.rating, rated.note) == (5, "brought the groceries up four floors")


def test_a_frozen_volunteers_service_is_not_reversed(world: World) -> None:
    service = world.serve("s1", "wang", "grandma")
    world.bank.confirm_service(service, operator="conf-sw")
    world.bank.set_member_status(world.members["wang"], "frozen", reason="audit",
                                 operator="gy-admin")
    refused(world, MemberStateError, lambda: world.bank.reverse_service(
        service, reason="x", operator="gy-admin"))


def test_an_institution_operator_acts_at_their_own_institution_only(world: World) -> None:
    """Redemption itself arrives with part 2; the rule it will pass through is here."""
    world.bank.add_site(PROGRAMME, "harmony", "Harmony care home", kind="institution",
                        region="guangyang", operator="admin")
    with world.bank.ledger.transaction() as tx:
        conn = tx.connection
        programme_id = conn.execute(
            sa.text("SELECT id FROM tb_programmes WHERE code = :c"), {"c": PROGRAMME}
        ).scalar_one()
        own = _org.site_row(conn, programme_id, "sunrise")
        other = _org.site_row(conn, programme_id, "harmony")
        assert _org.authorize(conn, programme_id, "sunrise-op", "redeemer", site=own).code
        with pytest.raises(PermissionDeniedError, match="redeemer at site 'harmony'"):
            _org.authorize(conn, programme_id, "sunrise-op", "redeemer", site=other)
        with pytest.raises(PermissionDeniedError):
            _org.authorize(conn, programme_id, "rec-sw", "redeemer", site=own)
