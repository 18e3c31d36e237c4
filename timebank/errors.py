"""The one exception tree of timebank.

Every refusal raises a subclass of :class:`TimebankError`, and also subclasses the builtin
that a plain ``except`` would expect, so callers may catch either::

    TimebankError
    ├── InvalidInputError (ValueError)          the command itself is malformed
    │   ├── InvalidAmountError                   minutes that are not a non-zero integer in range
    │   ├── UnbalancedEntryError                 postings do not sum to zero
    │   └── PostingCountError                    too few / too many / repeated accounts
    ├── NotFoundError (LookupError)
    │   ├── AccountNotFoundError
    │   ├── EntryNotFoundError
    │   ├── HoldNotFoundError
    │   └── BankObjectNotFoundError              programme, region, site, member, operator,
    │                                            service (``.kind`` says which)
    ├── PermissionDeniedError (PermissionError)  the operator may not act there
    ├── RefusedError (ValueError)                well-formed, but the ledger's state refuses it
    │   ├── AccountStateError                    account frozen / closed / not empty
    │   ├── LimitExceededError                   would pass an account's floor or ceiling
    │   │   └── CapExceededError                 a member's storage cap (the policy's)
    │   ├── HoldExpiredError
    │   ├── MemberStateError                     member frozen, deceased or closed
    │   ├── PolicyViolationError                 the programme's policy does not allow it
    │   ├── ServiceStateError                    e.g. confirming a rejected service
    │   └── ConflictError                        clashes with what is already recorded
    │       ├── IdempotencyConflictError         same key, other content (names the fields)
    │       ├── AlreadyReversedError
    │       ├── HoldResolvedError                a hold resolves exactly once
    │       ├── AccountExistsError               same account code, other definition
    │       ├── ExistsError                      same programme / region / site / member /
    │       │                                    operator, other definition (names the fields)
    │       ├── OverlappingServiceError          the volunteer served elsewhere at that time
    │       ├── AlreadySettledError              a period's clearing is settled once per level
    │       └── VoucherReplayError               a voucher id seen before, with other content
    ├── SignatureError (ValueError)              a voucher, acknowledgement or statement that
    │                                            is not signed with the partner's key: forged,
    │                                            altered, or sent to the wrong programme
    └── StorageError (RuntimeError)
        ├── ConcurrencyError                     retries exhausted under contention
        ├── SchemaError                          schema missing or behind: names the fix
        └── IntegrityViolationError              the database refused what the code let pass

A refusal never leaves a partial write behind: the operation's database transaction (or
savepoint, when the caller owns the transaction) is rolled back before the error is raised.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AccountExistsError",
    "AccountNotFoundError",
    "AccountStateError",
    "AlreadyReversedError",
    "AlreadySettledError",
    "BankObjectNotFoundError",
    "CapExceededError",
    "ConcurrencyError",
    "ConflictError",
    "EntryNotFoundError",
    "ExistsError",
    "HoldExpiredError",
    "HoldNotFoundError",
    "HoldResolvedError",
    "IdempotencyConflictError",
    "IntegrityViolationError",
    "InvalidAmountError",
    "InvalidInputError",
    "LimitExceededError",
    "MemberStateError",
    "NotFoundError",
    "OverlappingServiceError",
    "PermissionDeniedError",
    "PolicyViolationError",
    "PostingCountError",
    "RefusedError",
    "SchemaError",
    "ServiceStateError",
    "SignatureError",
    "StorageError",
    "TimebankError",
    "UnbalancedEntryError",
    "VoucherReplayError",
]


class TimebankError(Exception):
    """Base of every error timebank raises on purpose."""


class InvalidInputError(TimebankError, ValueError):
    """The command is malformed, whatever the state of the ledger."""


class InvalidAmountError(InvalidInputError):
    """Minutes must be a non-zero ``int`` within the named maximum; nothing is ever rounded."""


class UnbalancedEntryError(InvalidInputError):
    """The postings of an entry do not sum to zero."""


class PostingCountError(InvalidInputError):
    """An entry has too few or too many postings, or names one account twice."""


class NotFoundError(TimebankError, LookupError):
    """Something named by the command does not exist."""


class AccountNotFoundError(NotFoundError):
    def __init__(self, codes: Sequence[str]) -> None:
        self.codes = tuple(sorted(codes))
        super().__init__(f"unknown account(s): {', '.join(self.codes)}")


class EntryNotFoundError(NotFoundError):
    pass


class HoldNotFoundError(NotFoundError):
    pass


class BankObjectNotFoundError(NotFoundError):
    """No programme, region, site, member, operator or service by that name or id."""

    def __init__(self, kind: str, ref: object) -> None:
        self.kind = kind
        self.ref = ref
        super().__init__(f"no {kind} {ref!r}")


class PermissionDeniedError(TimebankError, PermissionError):
    """The operator has no role for this act where it is done. Nothing was written."""


class RefusedError(TimebankError, ValueError):
    """A well-formed command that the current state of the ledger refuses."""


class AccountStateError(RefusedError):
    """The account is not in a state that allows the operation (frozen, closed, not empty)."""


class LimitExceededError(RefusedError):
    """Posting or holding would take an account past its floor or ceiling (holds count)."""

    def __init__(
        self,
        account: str,
        *,
        limit: str,
        limit_minutes: int,
        available_minutes: int,
        requested_minutes: int,
    ) -> None:
        self.account = account
        self.limit = limit
        self.limit_minutes = limit_minutes
        self.available_minutes = available_minutes
        self.requested_minutes = requested_minutes
        if limit == "floor":
            detail = (
                f"needs {requested_minutes} minutes but only {available_minutes} are available "
                f"above its floor of {limit_minutes}"
            )
        else:
            detail = (
                f"would receive {requested_minutes} minutes but only {available_minutes} fit "
                f"under its {limit} of {limit_minutes}"
            )
        super().__init__(f"account {account!r} {detail}")


class CapExceededError(LimitExceededError):
    """A member would hold more minutes than the policy's storage cap allows."""

    def __init__(self, account: str, *, cap_minutes: int, room_minutes: int, requested: int):
        super().__init__(
            account,
            limit="storage cap",
            limit_minutes=cap_minutes,
            available_minutes=room_minutes,
            requested_minutes=requested,
        )


class HoldExpiredError(RefusedError):
    pass


class ConflictError(RefusedError):
    """The command clashes with something already recorded."""


class IdempotencyConflictError(ConflictError):
    """The idempotency key was used before for a command with other content."""

    def __init__(self, key: str, fields: Sequence[str]) -> None:
        self.key = key
        self.fields = tuple(fields)
        super().__init__(
            f"idempotency key {key!r} was already used with different {', '.join(self.fields)}"
        )


class AlreadyReversedError(ConflictError):
    pass


class HoldResolvedError(ConflictError):
    pass


class AccountExistsError(ConflictError):
    def __init__(self, code: str, fields: Sequence[str]) -> None:
        self.code = code
        self.fields = tuple(fields)
        super().__init__(f"account {code!r} already exists with different {', '.join(self.fields)}")


class MemberStateError(RefusedError):
    """A member who is frozen, deceased or closed cannot take part."""


class PolicyViolationError(RefusedError):
    """The programme's policy in force does not allow it (a service too long, an unknown
    service type...)."""


class ServiceStateError(RefusedError):
    """The service is not in a state that allows the act (confirming a rejected one...)."""


class ExistsError(ConflictError):
    """The thing exists already with another definition; ``fields`` names the differences."""

    def __init__(self, kind: str, ref: object, fields: Sequence[str]) -> None:
        self.kind = kind
        self.ref = ref
        self.fields = tuple(fields)
        super().__init__(f"{kind} {ref!r} already exists with different {', '.join(self.fields)}")


class OverlappingServiceError(ConflictError):
    """The volunteer has another service (pending or confirmed) overlapping this one."""

    def __init__(self, volunteer_id: int, other_service_id: int) -> None:
        self.volunteer_id = volunteer_id
        self.other_service_id = other_service_id
        super().__init__(
            f"member {volunteer_id} already has service {other_service_id} in that time"
        )


class AlreadySettledError(ConflictError):
    """The period is already settled at that level (by another idempotency key)."""

    def __init__(self, level: str, period: str, key: str) -> None:
        self.level = level
        self.period = period
        self.key = key
        super().__init__(f"the {level} clearing of {period} is already settled (key {key!r})")


class VoucherReplayError(ConflictError):
    """A voucher or acknowledgement whose id was recorded before with other content."""

    def __init__(self, voucher_id: str, what: str) -> None:
        self.voucher_id = voucher_id
        super().__init__(f"{what} {voucher_id!r} was recorded before with other content")


class SignatureError(TimebankError, ValueError):
    """A document from another programme that does not verify: no valid signature of the
    key shared with that partner, malformed, or addressed to another programme. Nothing
    was written."""


class StorageError(TimebankError, RuntimeError):
    """The database could not complete the operation."""


class ConcurrencyError(StorageError):
    """Serialization failures or deadlocks persisted past the bounded number of retries."""


class SchemaError(StorageError):
    """The database schema is missing or not at the version this library needs."""


class IntegrityViolationError(StorageError):
    """A database constraint refused a write that the library's own checks let through."""
