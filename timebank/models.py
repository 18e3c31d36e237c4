"""Commands (what callers ask for) and read models (what the ledger answers), as Pydantic models.

Commands validate on construction and raise this library's own typed errors (see
:mod:`timebank.errors`), never a bare ``pydantic.ValidationError``. Read models are frozen.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    model_validator,
)

from timebank import errors
from timebank._minutes import as_limit, as_minutes
from timebank.limits import (
    ACCOUNT_CODE_LENGTH_MAX,
    ACCOUNT_TYPE_LENGTH_MAX,
    ENTRY_CODE_LENGTH_MAX,
    KEY_LENGTH_MAX,
    MEMO_LENGTH_MAX,
    METADATA_BYTES_MAX,
    OPERATOR_LENGTH_MAX,
    OWNER_REF_LENGTH_MAX,
    POSTINGS_PER_ENTRY_MAX,
)

__all__ = [
    "AccountSpec",
    "AccountView",
    "BalanceAsOf",
    "BalanceView",
    "BatchReceipt",
    "EntryCommand",
    "EntryView",
    "HoldCommand",
    "HoldView",
    "IntegrityReport",
    "PostingSpec",
    "PostingView",
    "StatementLine",
    "StatementPage",
    "TransferCommand",
    "TrialBalance",
    "TrialBalanceLine",
]


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must be timezone-aware (for example datetime.now(UTC))")
    return value


#: Made once: ``json.dumps`` with options builds an encoder on every call, and bulk paths
#: validate a command per row.
_METADATA_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)

#: Values that read back from JSON as themselves (a float exactly, by its repr).
_SCALARS = (str, int, float, bool, type(None))


#: A bound on the JSON bytes of one flat value: a character of a string is at most 12 bytes
#: (a surrogate pair of \\u escapes), and an int under 10**18 at most 20 characters.
_STR_BYTES_PER_CHAR_MAX = 12
_SMALL_INT = 10**18


def _flat_bound(value: dict[str, Any]) -> int | None:
    """A bound on the bytes ``value`` takes as JSON, when it is flat (str keys; str, bool,
    None or not-too-large int values): metadata within the maximum by this bound needs no
    encoding to be judged (bulk paths validate a command per row). None: not flat."""
    total = 2  # the braces
    for key, item in value.items():
        if type(key) is not str:
            return None
        total += _STR_BYTES_PER_CHAR_MAX * len(key) + 4  # quotes, colon, comma
        kind = type(item)
        if kind is str:
            total += _STR_BYTES_PER_CHAR_MAX * len(item) + 2
        elif kind is int and -_SMALL_INT < item < _SMALL_INT:
            total += 20
        elif kind is bool or item is None:
            total += 5
        else:
            return None  # floats (NaN, their repr), large ints: measured exactly
    return total


def _small_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    bound = _flat_bound(value)
    if bound is not None and bound <= METADATA_BYTES_MAX:
        return dict(value)  # flat, within the maximum: already as it will read back
    try:
        dumped = _METADATA_ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be plain JSON: {exc}") from None
    size = len(dumped.encode())
    if size > METADATA_BYTES_MAX:
        raise ValueError(f"metadata is {size} bytes, past the maximum of {METADATA_BYTES_MAX}")
    if all(type(k) is str and type(v) in _SCALARS for k, v in value.items()):
        return dict(value)  # flat: already as it will read back
    # Kept as it will read back (tuples become lists, a str subclass a str), so a replay
    # compares equal.
    normalised: dict[str, Any] = json.loads(dumped)
    return normalised


Minutes = Annotated[int, BeforeValidator(as_minutes)]
Key = Annotated[str, Field(min_length=1, max_length=KEY_LENGTH_MAX)]
AccountCode = Annotated[str, Field(min_length=1, max_length=ACCOUNT_CODE_LENGTH_MAX)]
EntryCode = Annotated[str, Field(min_length=1, max_length=ENTRY_CODE_LENGTH_MAX)]
Operator = Annotated[str, Field(min_length=1, max_length=OPERATOR_LENGTH_MAX)]
Memo = Annotated[str, Field(max_length=MEMO_LENGTH_MAX)]
AwareDatetime = Annotated[datetime, Strict(), AfterValidator(_aware)]
Metadata = Annotated[dict[str, Any] | None, AfterValidator(_small_metadata)]


def _translate(exc: ValidationError, model: str) -> errors.InvalidInputError:
    """Turn Pydantic's report into this library's error, keeping every message."""
    for err in exc.errors():
        # Our validators raise our own errors; Pydantic keeps the original in ctx.
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, errors.InvalidInputError):
            return ctx_error
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or model}: {err['msg']}" for err in exc.errors()
    )
    return errors.InvalidInputError(f"invalid {model}: {problems}")


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _translate(exc, type(self).__name__) from None


class PostingSpec(_Command):
    """One leg of an entry: ``amount_minutes`` > 0 credits the account, < 0 debits it."""

    account: AccountCode
    amount_minutes: Minutes


class EntryCommand(_Command):
    """A balanced entry to post. ``occurred_at`` defaults to the recording time."""

    idempotency_key: Key
    code: EntryCode
    postings: tuple[PostingSpec, ...]
    operator: Operator
    occurred_at: AwareDatetime | None = None
    memo: Memo = ""
    metadata: Metadata = None

    @model_validator(mode="after")
    def _balanced(self) -> EntryCommand:
        # Raised as plain ValueError inside Pydantic; __init__ turns it into the typed error.
        check_postings(self.postings)
        return self

    @property
    def legs(self) -> tuple[tuple[str, int], ...]:
        """The postings as (account, amount_minutes) pairs: what the posting engine reads."""
        return tuple((p.account, p.amount_minutes) for p in self.postings)


class _Movement(_Command):
    """Minutes moving from ``debit`` to ``credit``: the fields a transfer and a hold share."""

    idempotency_key: Key
    code: EntryCode
    debit: AccountCode
    credit: AccountCode
    amount_minutes: Minutes
    operator: Operator
    memo: Memo = ""
    metadata: Metadata = None

    @model_validator(mode="after")
    def _two_accounts(self) -> _Movement:
        if self.amount_minutes < 0:
            raise errors.InvalidAmountError("amount_minutes must be positive")
        if self.debit == self.credit:
            raise errors.PostingCountError("debit and credit must be different accounts")
        return self


class TransferCommand(_Movement):
    """The common two-posting entry: ``amount_minutes`` (> 0) from ``debit`` to ``credit``.

    Flat, so it validates in one step: the fast input of ``post_many``.
    """

    occurred_at: AwareDatetime | None = None

    @property
    def legs(self) -> tuple[tuple[str, int], ...]:
        """The postings as (account, amount_minutes) pairs: what the posting engine reads."""
        return ((self.debit, -self.amount_minutes), (self.credit, self.amount_minutes))

    @property
    def postings(self) -> tuple[PostingSpec, ...]:
        """The two postings (already validated: built without validating again)."""
        return (
            PostingSpec.model_construct(account=self.debit, amount_minutes=-self.amount_minutes),
            PostingSpec.model_construct(account=self.credit, amount_minutes=self.amount_minutes),
        )


Command = EntryCommand | TransferCommand


def check_postings(postings: tuple[PostingSpec, ...]) -> None:
    count = len(postings)
    if count < 2 or count > POSTINGS_PER_ENTRY_MAX:
        raise errors.PostingCountError(
            f"an entry needs between 2 and {POSTINGS_PER_ENTRY_MAX} postings, got {count}"
        )
    if len({p.account for p in postings}) != count:
        raise errors.PostingCountError("an entry names each account at most once")
    total = sum(p.amount_minutes for p in postings)
    if total != 0:
        raise errors.UnbalancedEntryError(f"postings sum to {total} minutes, not zero")


class HoldCommand(_Movement):
    """Reserve ``amount_minutes`` moving from ``debit`` to ``credit`` (a pending transfer)."""

    expires_at: AwareDatetime | None = None


class AccountSpec(_Command):
    """An account to open. ``floor_minutes=None`` means no floor (system accounts)."""

    code: AccountCode
    type: Annotated[str, Field(min_length=1, max_length=ACCOUNT_TYPE_LENGTH_MAX)]
    owner_ref: Annotated[str, Field(max_length=OWNER_REF_LENGTH_MAX)] | None = None
    floor_minutes: int | None = 0
    ceiling_minutes: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _limits(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in ("floor_minutes", "ceiling_minutes"):
                if name in data:
                    data[name] = as_limit(data[name], what=name)
        return data

    @model_validator(mode="after")
    def _ordered(self) -> AccountSpec:
        floor, ceiling = self.floor_minutes, self.ceiling_minutes
        if floor is not None and ceiling is not None and floor > ceiling:
            raise ValueError(f"floor_minutes {floor} is above ceiling_minutes {ceiling}")
        return self


# --- read models -------------------------------------------------------------------------


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class AccountView(_View):
    id: int
    code: str
    type: str
    owner_ref: str | None
    status: Literal["open", "frozen", "closed"]
    status_reason: str
    floor_minutes: int | None
    ceiling_minutes: int | None
    created_at: datetime


class BalanceView(_View):
    """The materialised balance. ``available_minutes`` = posted minus pending debits (the
    floor is not subtracted; ``LimitExceededError.available_minutes`` is what a debit may
    still take, above the floor)."""

    account: str
    posted_minutes: int
    held_out_minutes: int
    held_in_minutes: int
    available_minutes: int
    version: int


class BalanceAsOf(_View):
    """Posted balance as the ledger showed it at ``recorded_at`` (recording time, not service)."""

    account: str
    recorded_at: datetime
    posted_minutes: int


class PostingView(_View):
    account: str
    amount_minutes: int
    balance_after_minutes: int


class EntryView(_View):
    id: int
    idempotency_key: str
    code: str
    occurred_at: datetime
    recorded_at: datetime
    operator: str
    memo: str
    metadata: dict[str, Any] | None
    reverses_entry_id: int | None
    postings: tuple[PostingView, ...]


class BatchReceipt(_View):
    """What ``post_many`` did: entry ids in command order; replays wrote nothing."""

    entry_ids: tuple[int, ...]
    created_count: int
    replayed_count: int


class HoldView(_View):
    id: int
    idempotency_key: str
    code: str
    debit: str
    credit: str
    amount_minutes: int
    status: Literal["pending", "posted", "voided", "expired"]
    operator: str
    memo: str
    metadata: dict[str, Any] | None
    created_at: datetime
    expires_at: datetime | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution_memo: str | None
    posted_entry_id: int | None


class StatementLine(_View):
    entry_id: int
    idempotency_key: str
    code: str
    occurred_at: datetime
    recorded_at: datetime
    memo: str
    amount_minutes: int
    balance_after_minutes: int


class StatementPage(_View):
    """One page in recording order; pass ``next_cursor`` as ``after`` for the next page."""

    account: str
    lines: tuple[StatementLine, ...]
    next_cursor: int | None


class TrialBalanceLine(_View):
    account: str
    type: str
    posted_minutes: int


class TrialBalance(_View):
    lines: tuple[TrialBalanceLine, ...]
    by_type_minutes: dict[str, int]
    total_minutes: int


class IntegrityReport(_View):
    """Result of replaying the ledger against its materialised state."""

    ok: bool
    problems: tuple[str, ...]
    entries: int
    postings: int
