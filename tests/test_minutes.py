"""Strict minutes and command validation: no database involved.

Every refusal asserts the exact typed error class (not merely a subclass) and that it is also a
``ValueError``, the builtin a plain ``except`` would expect.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from timebank import (
    AMOUNT_MAX_MINUTES,
    POSTINGS_PER_ENTRY_MAX,
    AccountSpec,
    EntryCommand,
    InvalidAmountError,
    InvalidInputError,
    PostingCountError,
    PostingSpec,
    TimebankError,
    UnbalancedEntryError,
)
from timebank._minutes import as_limit, as_minutes
from timebank.limits import KEY_LENGTH_MAX, MEMO_LENGTH_MAX, METADATA_BYTES_MAX
from timebank.models import HoldCommand, _flat_bound

E = TypeVar("E", bound=InvalidInputError)

AWARE = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


@contextmanager
def refused(cls: type[E], match: str | None = None) -> Iterator[pytest.ExceptionInfo[E]]:
    """Like ``pytest.raises(cls)``, but the class must be exactly ``cls``, and a ValueError."""
    with pytest.raises(cls, match=match) as info:
        yield info
    assert type(info.value) is cls, f"expected exactly {cls.__name__}, got {info.value!r}"
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, TimebankError)


def legs(*pairs: tuple[str, int]) -> tuple[PostingSpec, ...]:
    return tuple(PostingSpec(account=a, amount_minutes=m) for a, m in pairs)


def entry(**overrides: Any) -> EntryCommand:
    fields: dict[str, Any] = {
        "idempotency_key": "k-1",
        "code": "deposit",
        "operator": "op:1",
        "postings": legs(("issuer", -30), ("alice", 30)),
    }
    fields.update(overrides)
    return EntryCommand(**fields)


def hold(**overrides: Any) -> HoldCommand:
    fields: dict[str, Any] = {
        "idempotency_key": "h-1",
        "code": "redemption",
        "debit": "alice",
        "credit": "care-home",
        "amount_minutes": 45,
        "operator": "op:1",
    }
    fields.update(overrides)
    return HoldCommand(**fields)


# --- as_minutes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [1, -1, 45, -45, AMOUNT_MAX_MINUTES, -AMOUNT_MAX_MINUTES]
)
def test_ints_in_range_are_accepted_unchanged(value: int) -> None:
    result = as_minutes(value)
    assert result == value
    assert type(result) is int


@given(st.integers(min_value=-AMOUNT_MAX_MINUTES, max_value=AMOUNT_MAX_MINUTES))
def test_any_nonzero_int_in_range_is_accepted(value: int) -> None:
    assume(value != 0)
    assert as_minutes(value) == value
    assert PostingSpec(account="a", amount_minutes=value).amount_minutes == value


@pytest.mark.parametrize(
    "value", [AMOUNT_MAX_MINUTES + 1, -AMOUNT_MAX_MINUTES - 1, 10**30, -(10**30)]
)
def test_ints_past_the_maximum_are_refused(value: int) -> None:
    with refused(InvalidAmountError, match="past the maximum of 1000000000 minutes"):
        as_minutes(value)


@given(st.integers(min_value=AMOUNT_MAX_MINUTES + 1)
       | st.integers(max_value=-AMOUNT_MAX_MINUTES - 1))
def test_any_int_past_the_maximum_is_refused(value: int) -> None:
    with refused(InvalidAmountError):
        as_minutes(value)
    with refused(InvalidAmountError):
        as_minutes(value, allow_zero=True)


def test_zero_is_refused_unless_allowed() -> None:
    with refused(InvalidAmountError, match="amount_minutes must not be zero"):
        as_minutes(0)
    assert as_minutes(0, allow_zero=True) == 0


@pytest.mark.parametrize(
    "value", [5.0, 0.5, -5.0, 0.0, -0.0, 1e9, math.nan, math.inf, -math.inf]
)
def test_floats_are_refused_even_when_integral(value: float) -> None:
    with refused(InvalidAmountError, match="must be an integer number of minutes, got float"):
        as_minutes(value)
    with refused(InvalidAmountError):
        as_minutes(value, allow_zero=True)


@given(st.floats())  # includes nan, +-inf, -0.0, subnormals, integral floats
def test_any_float_is_refused(value: float) -> None:
    with refused(InvalidAmountError):
        as_minutes(value)
    with refused(InvalidAmountError):
        PostingSpec(account="a", amount_minutes=value)


@pytest.mark.parametrize("value", [True, False])
def test_bools_are_refused(value: bool) -> None:
    # A bool is an int subclass; False must not slip through as "zero" either.
    with refused(InvalidAmountError, match=f"got {value}$"):
        as_minutes(value)
    with refused(InvalidAmountError):
        as_minutes(value, allow_zero=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("5"), 5),
        (Decimal("-5"), -5),
        (Decimal("5.000"), 5),
        (Decimal("5E+2"), 500),
        (Decimal(AMOUNT_MAX_MINUTES), AMOUNT_MAX_MINUTES),
    ],
)
def test_integral_decimals_are_accepted(value: Decimal, expected: int) -> None:
    result = as_minutes(value)
    assert result == expected
    assert type(result) is int


@given(st.integers(min_value=1, max_value=AMOUNT_MAX_MINUTES), st.booleans())
def test_any_integral_decimal_in_range_is_accepted(value: int, negative: bool) -> None:
    minutes = -value if negative else value
    result = as_minutes(Decimal(minutes))
    assert result == minutes
    assert type(result) is int


@pytest.mark.parametrize(
    "value",
    [Decimal("5.5"), Decimal("0.1"), Decimal("-1.25"), Decimal("1E-9"), Decimal("NaN"),
     Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity")],
)
def test_fractional_and_non_finite_decimals_are_refused(value: Decimal) -> None:
    with refused(InvalidAmountError, match="got Decimal"):
        as_minutes(value)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=3))
def test_any_decimal_with_a_fraction_is_refused(value: Decimal) -> None:
    assume(value != value.to_integral_value())
    with refused(InvalidAmountError):
        as_minutes(value)


def test_integral_decimals_still_obey_zero_and_maximum() -> None:
    with refused(InvalidAmountError, match="must not be zero"):
        as_minutes(Decimal("-0"))
    with refused(InvalidAmountError, match="past the maximum"):
        as_minutes(Decimal(AMOUNT_MAX_MINUTES + 1))


@pytest.mark.parametrize("value", ["5", "", "five", b"5", None, [5], (5,), {"m": 5}, object()])
def test_non_numbers_are_refused(value: object) -> None:
    with refused(InvalidAmountError, match="must be an integer number of minutes"):
        as_minutes(value)


def test_the_error_names_what_was_refused() -> None:
    with refused(InvalidAmountError, match="^floor_minutes must be an integer"):
        as_minutes(1.5, what="floor_minutes")
    with refused(InvalidAmountError, match="^ceiling_minutes must not be zero"):
        as_minutes(0, what="ceiling_minutes")


# --- as_limit ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), (0, 0), (60, 60), (-500, -500), (Decimal("7"), 7),
     (AMOUNT_MAX_MINUTES, AMOUNT_MAX_MINUTES), (-AMOUNT_MAX_MINUTES, -AMOUNT_MAX_MINUTES)],
)
def test_limits_accept_none_zero_and_signed_ints(value: object, expected: int | None) -> None:
    assert as_limit(value, what="floor_minutes") == expected


@pytest.mark.parametrize(
    "value", [0.0, 60.0, math.nan, True, False, "60", Decimal("0.5"), AMOUNT_MAX_MINUTES + 1]
)
def test_limits_refuse_what_minutes_refuse(value: object) -> None:
    with refused(InvalidAmountError, match="^ceiling_minutes "):
        as_limit(value, what="ceiling_minutes")


# --- PostingSpec ------------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [5.0, math.nan, True, "5", None, Decimal("2.5"), 0,
                                    AMOUNT_MAX_MINUTES + 1])
def test_posting_spec_refuses_bad_amounts(amount: object) -> None:
    with refused(InvalidAmountError):
        PostingSpec(account="alice", amount_minutes=amount)


def test_posting_spec_accepts_an_integral_decimal_as_int() -> None:
    spec = PostingSpec(account="alice", amount_minutes=Decimal("-30"))
    assert spec.amount_minutes == -30
    assert type(spec.amount_minutes) is int


@pytest.mark.parametrize(
    "fields",
    [
        {"account": "", "amount_minutes": 5},
        {"account": "x" * 65, "amount_minutes": 5},
        {"amount_minutes": 5},
        {"account": "alice", "amount_minutes": 5, "extra": 1},
    ],
    ids=["empty-account", "long-account", "missing-account", "extra-field"],
)
def test_posting_spec_refuses_malformed_fields(fields: dict[str, Any]) -> None:
    with refused(InvalidInputError, match="invalid PostingSpec"):
        PostingSpec(**fields)


# --- EntryCommand -----------------------------------------------------------------------------


def test_a_well_formed_entry_is_accepted() -> None:
    occurred = datetime(2026, 11, 2, 10, 30, tzinfo=timezone(timedelta(hours=1)))
    cmd = entry(occurred_at=occurred, memo="m", metadata={"shift": 3})
    assert [(p.account, p.amount_minutes) for p in cmd.postings] == [("issuer", -30),
                                                                      ("alice", 30)]
    assert cmd.occurred_at == occurred
    assert cmd.metadata == {"shift": 3}


@pytest.mark.parametrize("count", [0, 1, POSTINGS_PER_ENTRY_MAX + 1, POSTINGS_PER_ENTRY_MAX + 5])
def test_too_few_or_too_many_postings_are_refused(count: int) -> None:
    specs = [(f"a{i}", 1) for i in range(count)]  # the count is checked before the sum
    with refused(PostingCountError, match=f"between 2 and {POSTINGS_PER_ENTRY_MAX} postings, "
                                          f"got {count}$"):
        entry(postings=legs(*specs))


def test_the_maximum_number_of_postings_is_accepted() -> None:
    n = POSTINGS_PER_ENTRY_MAX
    specs = [("a0", -(n - 1))] + [(f"a{i}", 1) for i in range(1, n)]
    assert len(entry(postings=legs(*specs)).postings) == n


def test_an_account_named_twice_is_refused() -> None:
    with refused(PostingCountError, match="each account at most once"):
        entry(postings=legs(("alice", -5), ("alice", 5)))
    with refused(PostingCountError, match="each account at most once"):
        entry(postings=legs(("issuer", -10), ("alice", 5), ("alice", 5)))


@pytest.mark.parametrize(
    ("pairs", "total"),
    [((("issuer", -30), ("alice", 31)), 1),
     ((("issuer", -30), ("alice", -30)), -60),
     ((("issuer", -30), ("alice", 10), ("bob", 10)), -10)],
)
def test_unbalanced_entries_are_refused(pairs: tuple[tuple[str, int], ...], total: int) -> None:
    with refused(UnbalancedEntryError, match=f"postings sum to {total} minutes, not zero"):
        entry(postings=legs(*pairs))


@given(
    st.lists(st.integers(min_value=-10_000, max_value=10_000).filter(bool),
             min_size=1, max_size=POSTINGS_PER_ENTRY_MAX - 1)
)
def test_any_balanced_entry_is_accepted(amounts: list[int]) -> None:
    last = -sum(amounts)
    assume(last != 0)
    pairs = [(f"acct-{i}", m) for i, m in enumerate([*amounts, last])]
    cmd = entry(postings=legs(*pairs))
    assert sum(p.amount_minutes for p in cmd.postings) == 0
    assert len(cmd.postings) == len(amounts) + 1


@given(
    st.lists(st.integers(min_value=-10_000, max_value=10_000).filter(bool),
             min_size=2, max_size=POSTINGS_PER_ENTRY_MAX)
)
def test_any_unbalanced_entry_is_refused(amounts: list[int]) -> None:
    assume(sum(amounts) != 0)
    with refused(UnbalancedEntryError):
        entry(postings=legs(*((f"acct-{i}", m) for i, m in enumerate(amounts))))


def test_postings_given_as_dicts_are_validated_too() -> None:
    with refused(InvalidAmountError):
        entry(postings=[{"account": "issuer", "amount_minutes": -5.0},
                        {"account": "alice", "amount_minutes": 5}])
    with refused(UnbalancedEntryError):
        entry(postings=[{"account": "issuer", "amount_minutes": -5},
                        {"account": "alice", "amount_minutes": 6}])


def test_naive_occurred_at_is_refused() -> None:
    with refused(InvalidInputError, match="timezone-aware"):
        entry(occurred_at=datetime(2026, 11, 2, 9, 30))


def test_occurred_at_must_be_a_datetime_not_a_string() -> None:
    with refused(InvalidInputError, match="occurred_at"):
        entry(occurred_at="2026-11-02T09:30:00+00:00")


def test_metadata_up_to_the_maximum_size_is_accepted() -> None:
    filler = "x" * (METADATA_BYTES_MAX - len('{"k":""}'))
    metadata = {"k": filler}
    assert len(json.dumps(metadata, separators=(",", ":")).encode()) == METADATA_BYTES_MAX
    assert entry(metadata=metadata).metadata == metadata


def test_oversize_metadata_is_refused() -> None:
    filler = "x" * (METADATA_BYTES_MAX - len('{"k":""}') + 1)
    with refused(InvalidInputError, match=f"{METADATA_BYTES_MAX + 1} bytes, past the maximum"):
        entry(metadata={"k": filler})


_FLAT_VALUES = st.one_of(
    st.text(),  # every code point: escapes (\\n, \\u0001) and surrogate pairs included
    st.integers(min_value=-(10**18) + 1, max_value=10**18 - 1),
    st.booleans(),
    st.none(),
)


@given(st.dictionaries(st.text(), _FLAT_VALUES, max_size=8))
def test_the_quick_size_bound_of_flat_metadata_is_never_below_its_size(
    metadata: dict[str, Any],
) -> None:
    # Flat metadata within the maximum by this bound is accepted without being encoded:
    # a bound below the true size would let oversize metadata through.
    encoded = json.dumps(metadata, sort_keys=True, separators=(",", ":"), allow_nan=False)
    bound = _flat_bound(metadata)
    assert bound is not None
    assert bound >= len(encoded.encode())
    if len(encoded.encode()) <= METADATA_BYTES_MAX:
        assert entry(metadata=metadata).metadata == metadata
    else:
        with refused(InvalidInputError, match="past the maximum"):
            entry(metadata=metadata)


class _Text(str):
    pass


class _Count(int):
    pass


@pytest.mark.parametrize(
    "metadata",
    [
        {"x": 1.5},
        {"x": 10**18},
        {"x": -(10**18)},
        {"x": [1]},
        {1: "x"},
        {"x": {"y": 1}},
        {"x": _Text("y")},
        {_Text("x"): 1},
        {"x": _Count(1)},
    ],
)
def test_metadata_the_quick_bound_cannot_judge_is_measured(metadata: dict[Any, Any]) -> None:
    assert _flat_bound(metadata) is None


def test_a_str_subclass_in_metadata_reads_back_as_a_plain_str() -> None:
    # Measured, not passed through: kept as it will read back, so a replay compares equal.
    stored = entry(metadata={"x": _Text("y")}).metadata
    assert stored == {"x": "y"}
    assert stored is not None
    assert type(stored["x"]) is str


def test_metadata_must_be_json() -> None:
    with refused(InvalidInputError, match="plain JSON"):
        entry(metadata={"when": AWARE})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("idempotency_key", ""),
        ("idempotency_key", "k" * (KEY_LENGTH_MAX + 1)),
        ("operator", ""),
        ("code", ""),
        ("memo", "m" * (MEMO_LENGTH_MAX + 1)),
        ("unknown_field", 1),
    ],
)
def test_malformed_entry_fields_are_refused(field: str, value: object) -> None:
    with refused(InvalidInputError, match=f"invalid EntryCommand: {field}"):
        entry(**{field: value})


def test_a_missing_field_is_refused() -> None:
    with refused(InvalidInputError, match="operator"):
        EntryCommand(idempotency_key="k", code="c",  # type: ignore[call-arg]
                     postings=legs(("a", -1), ("b", 1)))


def test_longest_key_is_accepted() -> None:
    assert entry(idempotency_key="k" * KEY_LENGTH_MAX).idempotency_key == "k" * KEY_LENGTH_MAX


# --- HoldCommand ------------------------------------------------------------------------------


def test_a_well_formed_hold_is_accepted() -> None:
    cmd = hold(expires_at=AWARE)
    assert (cmd.debit, cmd.credit, cmd.amount_minutes, cmd.expires_at) == (
        "alice", "care-home", 45, AWARE)


@pytest.mark.parametrize("amount", [-45, 0, 45.0, True, "45", AMOUNT_MAX_MINUTES + 1])
def test_hold_amounts_must_be_positive_ints(amount: object) -> None:
    with refused(InvalidAmountError):
        hold(amount_minutes=amount)


def test_negative_hold_amount_says_positive() -> None:
    with refused(InvalidAmountError, match="must be positive"):
        hold(amount_minutes=-1)


def test_hold_between_one_account_is_refused() -> None:
    with refused(PostingCountError, match="different accounts"):
        hold(credit="alice")


def test_naive_expiry_is_refused() -> None:
    with refused(InvalidInputError, match="timezone-aware"):
        hold(expires_at=datetime(2026, 11, 2, 9, 30))


@pytest.mark.parametrize(("field", "value"),
                         [("idempotency_key", ""), ("operator", ""), ("code", ""), ("debit", "")])
def test_malformed_hold_fields_are_refused(field: str, value: str) -> None:
    with refused(InvalidInputError, match=f"invalid HoldCommand: {field}"):
        hold(**{field: value})


# --- AccountSpec ------------------------------------------------------------------------------


def test_account_spec_defaults_and_limits() -> None:
    spec = AccountSpec(code="alice", type="member")
    assert (spec.floor_minutes, spec.ceiling_minutes, spec.owner_ref) == (0, None, None)
    spec = AccountSpec(code="x", type="member", floor_minutes=-60,
                       ceiling_minutes=Decimal("600"))
    assert (spec.floor_minutes, spec.ceiling_minutes) == (-60, 600)
    assert type(spec.ceiling_minutes) is int
    assert AccountSpec(code="x", type="t", floor_minutes=5, ceiling_minutes=5).ceiling_minutes == 5
    assert AccountSpec(code="x", type="t", floor_minutes=None).floor_minutes is None


@pytest.mark.parametrize("field", ["floor_minutes", "ceiling_minutes"])
@pytest.mark.parametrize("value", [5.0, math.inf, True, "5", Decimal("0.5"),
                                   AMOUNT_MAX_MINUTES + 1])
def test_account_limits_must_be_int_minutes(field: str, value: object) -> None:
    with refused(InvalidAmountError, match=f"^{field} "):
        AccountSpec(code="alice", type="member", **{field: value})


def test_floor_above_ceiling_is_refused() -> None:
    with refused(InvalidInputError, match="floor_minutes 10 is above ceiling_minutes 5"):
        AccountSpec(code="alice", type="member", floor_minutes=10, ceiling_minutes=5)


@pytest.mark.parametrize(
    ("field", "value"),
    [("code", ""), ("code", "c" * 65), ("type", ""), ("owner_ref", "o" * 129)],
)
def test_malformed_account_fields_are_refused(field: str, value: str) -> None:
    fields: dict[str, Any] = {"code": "alice", "type": "member", field: value}
    with refused(InvalidInputError, match=f"invalid AccountSpec: {field}"):
        AccountSpec(**fields)
