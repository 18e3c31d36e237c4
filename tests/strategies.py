"""Hypothesis strategies for timebank, in one place.

Valid values build commands the ledger must accept (as far as their shape goes); invalid
values are what the ledger must refuse with :class:`~timebank.InvalidAmountError` before it
touches the database.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from timebank import AMOUNT_MAX_MINUTES, EntryCommand, PostingSpec
from timebank.limits import (
    ACCOUNT_CODE_LENGTH_MAX,
    ENTRY_CODE_LENGTH_MAX,
    KEY_LENGTH_MAX,
    OPERATOR_LENGTH_MAX,
)

__all__ = [
    "CODE_ALPHABET",
    "account_codes",
    "balanced_amounts",
    "entry_codes",
    "entry_commands",
    "idempotency_keys",
    "invalid_minutes",
    "invalid_positive_minutes",
    "memos",
    "metadata",
    "minutes",
    "occurred_ats",
    "operators",
    "realistic_minutes",
    "valid_minutes",
]

#: Characters of generated codes and keys: plain ASCII, so that every backend (including
#: MariaDB's case-insensitive collations) compares them the same way only if they differ in
#: more than case. Case variants are still generated; see ``idempotency_keys``.
CODE_ALPHABET = string.ascii_letters + string.digits + "-_.:"


# --- identifiers ---------------------------------------------------------------------------


def account_codes(*, max_size: int = ACCOUNT_CODE_LENGTH_MAX) -> st.SearchStrategy[str]:
    """Any valid account code (1..ACCOUNT_CODE_LENGTH_MAX characters)."""
    return st.text(alphabet=CODE_ALPHABET, min_size=1, max_size=max_size)


def idempotency_keys(*, max_size: int = KEY_LENGTH_MAX) -> st.SearchStrategy[str]:
    """Any valid idempotency key (1..KEY_LENGTH_MAX characters)."""
    return st.text(alphabet=CODE_ALPHABET, min_size=1, max_size=max_size)


def entry_codes() -> st.SearchStrategy[str]:
    """The entry's kind: mostly a few realistic words, sometimes any valid code."""
    return st.one_of(
        st.sampled_from(["service", "gift", "fee", "bonus"]),
        st.text(alphabet=CODE_ALPHABET, min_size=1, max_size=ENTRY_CODE_LENGTH_MAX),
    )


def operators() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(["alice", "bob", "batch-import"]),
        st.text(alphabet=CODE_ALPHABET, min_size=1, max_size=OPERATOR_LENGTH_MAX),
    )


def memos() -> st.SearchStrategy[str]:
    return st.one_of(st.just(""), st.sampled_from(["thanks", "gardening, 2h", "Ünïcode ✓"]))


def metadata() -> st.SearchStrategy[dict[str, Any] | None]:
    """None or a small JSON object (ints, strings, booleans; no floats, so equality is exact)."""
    scalars = st.one_of(st.integers(-(2**31), 2**31), st.text(max_size=12), st.booleans())
    return st.one_of(
        st.none(),
        st.dictionaries(st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8),
                        scalars, max_size=3),
    )


def occurred_ats() -> st.SearchStrategy[datetime | None]:
    """None (meaning "when recorded") or an aware datetime in any whole-minute offset."""
    offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    moments = st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)
    ).map(lambda d: d.replace(tzinfo=UTC))
    return st.one_of(
        st.none(),
        st.builds(lambda moment, tz: moment.astimezone(tz), moments, offsets),
    )


# --- minutes -------------------------------------------------------------------------------


def valid_minutes() -> st.SearchStrategy[int]:
    """Any positive amount the ledger accepts: 1..AMOUNT_MAX_MINUTES."""
    return st.integers(min_value=1, max_value=AMOUNT_MAX_MINUTES)


def realistic_minutes() -> st.SearchStrategy[int]:
    """A positive amount of the size people actually record: up to ten hours."""
    return st.integers(min_value=1, max_value=600)


def minutes() -> st.SearchStrategy[int]:
    """Mostly realistic, sometimes anywhere up to the maximum (and the maximum itself)."""
    return st.one_of(realistic_minutes(), valid_minutes(), st.just(AMOUNT_MAX_MINUTES))


def _fractional_decimals() -> st.SearchStrategy[Decimal]:
    fractions = st.builds(
        lambda whole, hundredths: Decimal(whole) + Decimal(hundredths) / 100,
        st.integers(-10_000, 10_000),
        st.integers(1, 99),
    )
    return st.one_of(
        fractions,
        st.sampled_from([Decimal("0.5"), Decimal("5.000001"), Decimal("NaN"),
                         Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity")]),
    )


def invalid_minutes() -> st.SearchStrategy[Any]:
    """Values that are never minutes, whatever the sign convention: floats (even 5.0), bools,
    Decimals with a fraction or not finite, strings, None, zero, and integers past the max."""
    return st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([5.0, 0.0, -1.0, 1e9]),
        st.booleans(),
        _fractional_decimals(),
        st.text(max_size=10),
        st.sampled_from(["5", "60", " 1"]),
        st.none(),
        st.sampled_from([0, Decimal(0), Decimal("-0")]),
        st.integers(min_value=AMOUNT_MAX_MINUTES + 1),
        st.integers(max_value=-AMOUNT_MAX_MINUTES - 1),
        st.sampled_from([AMOUNT_MAX_MINUTES + 1, -AMOUNT_MAX_MINUTES - 1]),
    )


def invalid_positive_minutes() -> st.SearchStrategy[Any]:
    """Invalid for a transfer, hold or post_hold amount: ``invalid_minutes`` plus negatives."""
    return st.one_of(invalid_minutes(), st.integers(-AMOUNT_MAX_MINUTES, -1))


# --- entries -------------------------------------------------------------------------------


@st.composite
def balanced_amounts(
    draw: st.DrawFn, count: int, total: st.SearchStrategy[int] | None = None
) -> list[int]:
    """``count`` (>= 2) non-zero amounts, each within the maximum, that sum to zero.

    A total T is split into between 1 and count-1 debits and the rest credits; the legs are
    shuffled so that a debit is not always listed first.
    """
    if count < 2:
        raise ValueError("a balanced entry needs at least two postings")
    debits = draw(st.integers(1, count - 1))
    credits = count - debits
    amount = max(draw(total if total is not None else realistic_minutes()), debits, credits)

    def split(parts: int) -> list[int]:
        if parts == 1:
            return [amount]
        cuts = sorted(draw(st.lists(st.integers(1, amount - 1), min_size=parts - 1,
                                    max_size=parts - 1, unique=True)))
        bounds = [0, *cuts, amount]
        return [high - low for low, high in itertools.pairwise(bounds)]

    legs = [-part for part in split(debits)] + split(credits)
    return list(draw(st.permutations(legs)))


@st.composite
def entry_commands(
    draw: st.DrawFn,
    codes: Sequence[str],
    *,
    keys: st.SearchStrategy[str] | None = None,
    amounts: st.SearchStrategy[int] | None = None,
    min_postings: int = 2,
    max_postings: int = 4,
) -> EntryCommand:
    """A balanced command over distinct accounts drawn from ``codes`` (at least two)."""
    if len(set(codes)) < 2:
        raise ValueError("an entry needs at least two distinct account codes")
    distinct = sorted(set(codes))
    count = draw(st.integers(min_postings, min(max_postings, len(distinct))))
    accounts = draw(st.permutations(distinct))[:count]
    legs = draw(balanced_amounts(count, amounts))
    return EntryCommand(
        idempotency_key=draw(keys if keys is not None else idempotency_keys()),
        code=draw(entry_codes()),
        operator=draw(operators()),
        memo=draw(memos()),
        metadata=draw(metadata()),
        occurred_at=draw(occurred_ats()),
        postings=tuple(
            PostingSpec(account=account, amount_minutes=amount)
            for account, amount in zip(accounts, legs, strict=True)
        ),
    )
