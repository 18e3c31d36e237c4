"""Hypothesis strategies for testing software built on the time bank.

Valid values (:func:`policies`, :func:`members`, :func:`services`, :func:`commands`) are
well formed: every argument is one the bank accepts. A valid *command* may still be refused
for a business reason that depends on the state (too few minutes, no relation between giver
and receiver): :class:`~timebank.testing.machine.TimeBankMachine` predicts which.

Invalid values (:func:`invalid_services`, :func:`invalid_amounts`, :func:`hostile_strings`,
:func:`naive_datetimes`) are what the bank must refuse with a
:class:`~timebank.TimebankError` subclass before it changes anything; each says why.

Needs Hypothesis (the ``testing`` extra).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Final, Generic, TypedDict, TypeVar

from hypothesis import strategies as st

from timebank import AMOUNT_MAX_MINUTES
from timebank.bank import Policy, ServiceType
from timebank.bank.limits import (
    CODE_LENGTH_MAX,
    IDENTITY_LENGTH_MAX,
    NAME_LENGTH_MAX,
    SERVICE_MINUTES_MAX,
    WEIGHT_PERMILLE_MAX,
)
from timebank.bank.models import ActsAs, GrantRule, Sex
from timebank.errors import (
    InvalidAmountError,
    InvalidInputError,
    MemberStateError,
    PermissionDeniedError,
    PolicyViolationError,
    TimebankError,
)
from timebank.testing import commands as cmd
from timebank.testing.world import (
    INSTITUTION,
    MEMBERS,
    POLICY,
    RECORDER,
    SPOUSES,
    STATIONS,
    World,
)

__all__ = [
    "INVALID_AMOUNT_ERROR",
    "KINDS",
    "Invalid",
    "MemberArgs",
    "ServiceArgs",
    "aware_datetimes",
    "commands",
    "hostile_strings",
    "invalid_amounts",
    "invalid_services",
    "members",
    "naive_datetimes",
    "policies",
    "service_minutes",
    "services",
]

T = TypeVar("T")

_CODE_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_.-"
#: Text a database stores verbatim on every backend: no control characters (PostgreSQL
#: refuses NUL) and no lone surrogates (not encodable as UTF-8).
_TEXT = st.characters(blacklist_categories=("Cs", "Cc"))
_ZONES = ("UTC", "Asia/Shanghai", "Europe/Berlin", "America/New_York")


@dataclass(frozen=True)
class Invalid(Generic[T]):
    """A value the bank must refuse: with ``error`` (or a subclass), because ``why``."""

    value: T
    error: type[TimebankError]
    why: str


# --- policies --------------------------------------------------------------------------------


def _codes() -> st.SearchStrategy[str]:
    return st.text(alphabet=_CODE_ALPHABET, min_size=1, max_size=CODE_LENGTH_MAX)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    """Any valid :class:`~timebank.bank.Policy`: one to four service types (weights from 0.1
    to 10 credits an hour), every rule drawn, and the combinations the policy refuses
    avoided (``age_and_need`` always has a minimum age and ``need_redeems``)."""
    types = draw(
        st.dictionaries(
            _codes(),
            st.builds(
                ServiceType,
                name=st.text(_TEXT, min_size=1, max_size=40),
                weight_permille=st.integers(100, WEIGHT_PERMILLE_MAX),
            ),
            min_size=1,
            max_size=4,
        )
    )
    rule = draw(st.sampled_from(["age_or_need", "age_and_need"]))
    need_redeems = True if rule == "age_and_need" else draw(st.booleans())
    min_age = draw(
        st.integers(0, 100) if rule == "age_and_need" else st.one_of(st.none(), st.integers(0, 100))
    )
    return Policy(
        service_types=types,
        confirmations_required=draw(st.sampled_from([1, 2])),
        auto_confirm_after_minutes=draw(st.one_of(st.none(), st.integers(0, 7 * 24 * 60))),
        service_minutes_max=draw(st.integers(60, SERVICE_MINUTES_MAX)),
        lot_expiry_days=draw(st.one_of(st.none(), st.integers(1, 3650))),
        timezone=draw(st.sampled_from(_ZONES)),
        redemption_min_age=min_age,
        need_redeems=need_redeems,
        redemption_rule=rule,
        spouse_redeems=draw(st.booleans()),
        gift_relations=draw(
            st.frozensets(
                st.sampled_from(
                    ["spouse", "parent", "child", "sibling", "other_relative", "friend"]
                )
            )
        ),
        gift_yearly_limit_minutes=draw(st.one_of(st.none(), st.integers(1, 100_000))),
        expired_to=draw(st.sampled_from(["programme", "pool"])),
        storage_cap_minutes=draw(st.one_of(st.none(), st.integers(60, 100_000))),
        cap_excess=draw(st.sampled_from(["refuse", "pool"])),
        groups_donate_only=draw(st.booleans()),
        grant_rules=tuple(
            draw(
                st.lists(
                    st.builds(
                        GrantRule,
                        min_age=st.integers(0, 120),
                        attributes=st.frozensets(_codes(), max_size=2),
                        assessed_need=st.booleans(),
                    ),
                    max_size=3,
                )
            )
        ),
        estate_to=draw(st.sampled_from(["beneficiary", "pool"])),
    )


# --- members -------------------------------------------------------------------------------


class MemberArgs(TypedDict):
    """The member's own arguments of ``register_member`` (add ``home_site`` and
    ``operator``)."""

    identity: str
    display_name: str
    birth_date: date
    sex: Sex | None
    acts_as: ActsAs


def members(*, born_before: date = date(2010, 1, 1)) -> st.SearchStrategy[MemberArgs]:
    """Registration arguments the bank accepts: any identity (1..64 characters), a display
    name of 1..120 printable characters, a birth date from 1900, sex or None, a role. Two
    draws with the same identity but other data are refused (ExistsError): make identities
    unique (``st.lists(members(), unique_by=lambda m: m["identity"])``)."""
    return st.builds(
        MemberArgs,
        identity=st.text(_TEXT, min_size=1, max_size=IDENTITY_LENGTH_MAX),
        display_name=st.text(_TEXT, min_size=1, max_size=NAME_LENGTH_MAX),
        birth_date=st.dates(date(1900, 1, 1), born_before),
        sex=st.sampled_from([None, "female", "male"]),
        acts_as=st.sampled_from(["both", "volunteer", "recipient"]),
    )


# --- services ------------------------------------------------------------------------------


class ServiceArgs(TypedDict):
    """Keyword arguments of ``TimeBank.record_service`` (after the idempotency key)."""

    programme: str
    volunteer_id: int
    recipient_ids: list[int]
    site: str
    service_type: str
    started_at: datetime
    ended_at: datetime
    operator: str


def service_minutes(policy: Policy, service_type: str) -> st.SearchStrategy[int]:
    """Whole minutes a service of ``service_type`` may last under ``policy``: at most
    ``service_minutes_max``, and long enough to credit at least one minute."""
    weight = policy.service_types[service_type].weight_permille
    shortest = -(-1000 // weight)  # credited = minutes * weight // 1000 >= 1
    return st.integers(shortest, policy.service_minutes_max)


@st.composite
def services(draw: st.DrawFn, world: World, *, volunteer: str | None = None) -> ServiceArgs:
    """``record_service`` arguments valid in ``world`` now: a volunteer (a member who may
    volunteer; or ``volunteer``) serving one other member who may receive, at a station, by
    its recorder, a catalogue type, ending in the last week at or before now (any offset
    from UTC), within the policy's longest service and crediting at least a minute.

    Valid on its own: two draws for the same volunteer may overlap in time, which the bank
    refuses (OverlappingServiceError). Record one per volunteer, or use :func:`commands`.
    """
    names = sorted(world.members)
    volunteers = [n for n in names if MEMBERS.get(n, (None, "both"))[1] != "recipient"]
    who = volunteer or draw(st.sampled_from(volunteers))
    recipients = [n for n in names if n != who and MEMBERS.get(n, (None, "both"))[1] != "volunteer"]
    recipient = draw(st.sampled_from(recipients))
    site = draw(st.sampled_from(STATIONS))
    kind = draw(st.sampled_from(sorted(world.policy.service_types)))
    length = draw(service_minutes(world.policy, kind))
    ago = draw(st.integers(0, 7 * 24 * 60))
    zone = timezone(timedelta(minutes=draw(st.integers(-12 * 60, 14 * 60))))
    end = (world.clock.now - timedelta(minutes=ago)).astimezone(zone)
    return ServiceArgs(
        programme=world.programme,
        volunteer_id=world.members[who],
        recipient_ids=[world.members[recipient]],
        site=site,
        service_type=kind,
        started_at=end - timedelta(minutes=length),
        ended_at=end,
        operator=RECORDER[site],
    )


@st.composite
def invalid_services(draw: st.DrawFn, world: World) -> Invalid[ServiceArgs]:  # noqa: PLR0911
    """``record_service`` arguments with exactly one fault, and the error it must raise:
    a naive datetime, an end not after the start, a start or end in the future, longer than
    the policy allows, shorter than a credited minute, a type not in the catalogue, an
    institution as the site, a recorder of another station, a volunteer serving themselves,
    or a recipient-only member volunteering. Nothing may change in the database."""
    args = draw(services(world))
    fault = draw(
        st.sampled_from(
            [
                "naive",
                "backwards",
                "future start",
                "future end",
                "too long",
                "too short",
                "unknown type",
                "institution",
                "stranger",
                "self",
                "recipient volunteers",
            ]
        )
    )
    start, end = args["started_at"], args["ended_at"]
    now = world.clock.now
    match fault:
        case "naive":
            args["started_at"] = start.replace(tzinfo=None)
            return Invalid(args, InvalidInputError, "started_at is a naive datetime")
        case "backwards":
            args["started_at"], args["ended_at"] = end, start
            return Invalid(args, InvalidInputError, "the service ends before it starts")
        case "future start":
            minutes = draw(st.integers(1, 24 * 60))
            args["started_at"] = now + timedelta(minutes=minutes)
            args["ended_at"] = args["started_at"] + (end - start)
            return Invalid(args, InvalidInputError, "the service starts in the future")
        case "future end":
            args["ended_at"] = now + timedelta(minutes=draw(st.integers(1, 60)))
            args["started_at"] = args["ended_at"] - timedelta(minutes=60)
            return Invalid(args, InvalidInputError, "the service has not ended yet")
        case "too long":
            extra = draw(st.integers(1, 600))
            args["started_at"] = end - timedelta(minutes=world.policy.service_minutes_max + extra)
            return Invalid(args, PolicyViolationError, "longer than service_minutes_max")
        case "too short":
            args["started_at"] = end - timedelta(seconds=draw(st.integers(1, 59)))
            return Invalid(args, PolicyViolationError, "less than a minute credits nothing")
        case "unknown type":
            kind = draw(_codes().filter(lambda c: c not in world.policy.service_types))
            args["service_type"] = kind
            return Invalid(args, PolicyViolationError, "the type is not in the catalogue")
        case "institution":
            args["site"] = INSTITUTION
            args["operator"] = "admin"
            return Invalid(args, InvalidInputError, "services are recorded at stations")
        case "stranger":
            other = next(s for s in STATIONS if s != args["site"])
            args["operator"] = RECORDER[other]
            return Invalid(args, PermissionDeniedError, "the recorder of another station")
        case "self":
            args["recipient_ids"] = [args["volunteer_id"]]
            return Invalid(args, InvalidInputError, "a volunteer cannot serve themselves")
        case _:
            recipients_only = [n for n, (_, role) in MEMBERS.items() if role == "recipient"]
            who = world.members[recipients_only[0]]
            others = [i for i in args["recipient_ids"] if i != who] or [world.members[SPOUSES[0]]]
            args["volunteer_id"], args["recipient_ids"] = who, others
            return Invalid(args, MemberStateError, "a recipient-only member volunteers")


# --- commands ------------------------------------------------------------------------------

#: The kinds of :data:`~timebank.testing.commands.Command`.
KINDS: Final = ("record", "confirm", "redeem", "give", "donate", "book", "complete", "cancel")


def commands(
    *,
    members: tuple[str, ...] = tuple(MEMBERS),
    policy: Policy = POLICY,
    max_minutes: int = 600,
    kinds: Collection[str] = KINDS,
) -> st.SearchStrategy[cmd.Command]:
    """Well-formed time-bank commands (:mod:`timebank.testing.commands`) for the world:
    records of catalogue services long enough to credit a minute, by members who may
    volunteer for other members who may receive; confirmations; redemptions, gifts (giver
    and receiver distinct), donations and bookings of 1..``max_minutes``; completions and
    cancellations (``kinds`` chooses among them; gifts go to a spouse half the time).
    Whether one is accepted depends on the state: a redemption of more
    minutes than the member has free is refused (LimitExceededError), a gift between
    members who are not related too (PolicyViolationError)."""
    roles = {name: MEMBERS.get(name, (None, "both"))[1] for name in members}
    volunteers = sorted(n for n, role in roles.items() if role != "recipient")
    receivers = sorted(n for n, role in roles.items() if role != "volunteer")
    names = st.sampled_from(sorted(members))
    amounts = st.integers(1, max_minutes)

    @st.composite
    def record(draw: st.DrawFn) -> cmd.Record:
        volunteer = draw(st.sampled_from(volunteers))
        recipient = draw(st.sampled_from([n for n in receivers if n != volunteer]))
        kind = draw(st.sampled_from(sorted(policy.service_types)))
        length = draw(service_minutes(policy, kind))
        return cmd.Record(volunteer, recipient, draw(st.sampled_from(STATIONS)), kind, length)

    @st.composite
    def give(draw: st.DrawFn) -> cmd.Give:
        couple: list[str] = [n for n in SPOUSES if n in members]
        if len(couple) == 2 and draw(st.booleans()):
            giver, receiver = draw(st.permutations(couple))
        else:
            giver = draw(names)
            receiver = draw(st.sampled_from([n for n in sorted(members) if n != giver]))
        return cmd.Give(giver, receiver, draw(amounts))

    picks = st.integers(0, 1_000)
    options: dict[str, st.SearchStrategy[cmd.Command]] = {
        "record": record(),
        "confirm": st.builds(cmd.Confirm, picks),
        "redeem": st.builds(cmd.Redeem, names, amounts),
        "give": give(),
        "donate": st.builds(cmd.Donate, names, amounts),
        "book": st.builds(cmd.Book, names, amounts, st.integers(1, 72)),
        "complete": st.builds(cmd.Complete, picks),
        "cancel": st.builds(cmd.Cancel, picks),
    }
    unknown = set(kinds) - set(options)
    if unknown or not kinds:
        raise ValueError(f"kinds: some of {KINDS}, not {sorted(unknown)}")
    return st.one_of(*(options[kind] for kind in KINDS if kind in kinds))


# --- hostile and invalid values ------------------------------------------------------------


def invalid_amounts() -> st.SearchStrategy[Any]:
    """Never a positive amount of minutes, so ``redeem``, ``give``, ``donate``, ``book`` and
    ``complete_booking`` refuse them with InvalidAmountError: zero, negatives, booleans (an
    ``int`` subclass), floats (even ``5.0``), fractional or non-finite Decimals, strings,
    None, and integers past ``AMOUNT_MAX_MINUTES``."""
    return st.one_of(
        st.just(0),
        st.integers(max_value=-1),
        st.booleans(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([Decimal("0.5"), Decimal("NaN"), Decimal("Infinity")]),
        st.sampled_from(["60", "1 hour", ""]),
        st.none(),
        st.integers(min_value=AMOUNT_MAX_MINUTES + 1),
    )


#: The error :func:`invalid_amounts` values raise.
INVALID_AMOUNT_ERROR = InvalidAmountError


def hostile_strings(*, max_size: int = 600) -> st.SearchStrategy[str]:
    """Strings station software may pass through from its users: empty, very long (past
    the 120/500-character limits), SQL and markup, NUL and other control characters,
    right-to-left and zero-width marks, emoji, lone surrogates, case and Unicode-normalisation
    twins. The bank must store such a text exactly or refuse it with a TimebankError
    (InvalidInputError for length and shape); it must never fail with another error or
    change anything when it refuses."""
    return st.one_of(
        st.sampled_from(
            [
                "",
                " ",
                "'; DROP TABLE members; --",
                "<script>alert(1)</script>",
                "Robert\x00Tables",
                "line\r\nbreak\ttab",
                "\u202eevil\u202c",
                "zero\u200bwidth",
                "emoji \U0001f474\U0001f3fd",
                "Ångström",
                "A\u030angstro\u0308m",
                "\ud800",
                "x" * 121,
                "y" * 501,
            ]
        ),
        st.text(max_size=max_size),
    )


def naive_datetimes() -> st.SearchStrategy[datetime]:
    """Datetimes without a time zone: every time the bank takes (``started_at``,
    ``ended_at``, ``occurred_at``, ``scheduled_at``, ``as_of``) must be aware, so these are
    refused with InvalidInputError."""
    return st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31))


def aware_datetimes() -> st.SearchStrategy[datetime]:
    """Aware datetimes in whole-minute offsets from -12:00 to +14:00 (for completeness)."""
    offsets = st.integers(-12 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    return st.builds(
        lambda moment, zone: moment.replace(tzinfo=UTC).astimezone(zone),
        naive_datetimes(),
        offsets,
    )
