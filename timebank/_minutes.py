"""Strict minutes: integers only, never rounded."""

from __future__ import annotations

from decimal import Decimal

from timebank.errors import InvalidAmountError
from timebank.limits import AMOUNT_MAX_MINUTES


def as_minutes(value: object, *, what: str = "amount_minutes", allow_zero: bool = False) -> int:
    """Return ``value`` as an int of minutes, or raise :class:`InvalidAmountError`.

    Refused: ``bool`` (an ``int`` subclass that is never meant as minutes), ``float`` (even 5.0:
    a float in a ledger is a bug upstream), ``Decimal`` with a fraction, ``str``, ``None``.
    An integral ``Decimal`` is exact, so it is accepted.
    """
    if isinstance(value, bool) or value is None:
        raise InvalidAmountError(f"{what} must be an integer number of minutes, got {value!r}")
    if isinstance(value, int):
        minutes = value
    elif isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        minutes = int(value)
    else:
        raise InvalidAmountError(
            f"{what} must be an integer number of minutes, got {type(value).__name__} {value!r}"
        )
    if minutes == 0 and not allow_zero:
        raise InvalidAmountError(f"{what} must not be zero")
    if abs(minutes) > AMOUNT_MAX_MINUTES:
        raise InvalidAmountError(
            f"{what} {minutes} is past the maximum of {AMOUNT_MAX_MINUTES} minutes"
        )
    return minutes


def as_limit(value: object, *, what: str) -> int | None:
    """A floor or ceiling: ``None`` (no limit) or an integer number of minutes, zero allowed."""
    if value is None:
        return None
    return as_minutes(value, what=what, allow_zero=True)
