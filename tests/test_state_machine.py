"""The ledger against an in-memory reference model, step by step (Hypothesis stateful).

The model is plain Python: accounts (posted minutes, limits, status), entries by key with
their content, holds with their status. Before every step it predicts either success (and
what the ledger answers) or the exact error class of the refusal, with the error's
attributes where the library documents them. A refusal must leave every row of the database
as it was (``tests.dbdump.dump`` before and after). After every step the invariants compare
the whole ledger with the model and run ``Ledger.verify``.

Time is a fake clock the machine advances, so that holds expire deterministically.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TypeVar

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy.pool import NullPool

from tests import strategies as tbst
from tests.dbdump import dump
from timebank import (
    AMOUNT_MAX_MINUTES,
    ENTRIES_PER_BATCH_MAX,
    POSTINGS_PER_ENTRY_MAX,
    AccountExistsError,
    AccountNotFoundError,
    AccountStateError,
    AccountView,
    AlreadyReversedError,
    BatchReceipt,
    EntryCommand,
    EntryNotFoundError,
    EntryView,
    HoldExpiredError,
    HoldNotFoundError,
    HoldResolvedError,
    HoldView,
    IdempotencyConflictError,
    InvalidAmountError,
    InvalidInputError,
    Ledger,
    LimitExceededError,
    PostingCountError,
    PostingSpec,
    TimebankError,
    UnbalancedEntryError,
)

T = TypeVar("T")
Snapshot = dict[str, list[tuple[Any, ...]]]

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

#: Codes the machine opens accounts under (so that opening twice happens), and codes it never
#: opens (so that unknown accounts are named on purpose).
ACCOUNT_POOL = ("bank", "pool", "m1", "m2", "m3", "M1", "m4", "m5", "cap1", "cap2", "x")
GHOSTS = ("ghost", "nobody")
#: A small pool of keys shared by every kind of command, so that keys collide across
#: entries, holds and hold resolutions, next to keys that are (almost always) fresh. Codes
#: and keys are exact strings: "M1" is not "m1", "K0" and "k0 " are not "k0".
KEY_POOL = (*(f"k{i}" for i in range(10)), "K0", "k0 ")

OPS = ("alice", "bob")
REASONS = ("", "mistake", "duplicate")


def amounts() -> st.SearchStrategy[int]:
    """Mostly amounts the seeded members can afford; now and then up to the maximum."""
    return st.one_of(st.integers(1, 120), st.integers(1, 120), tbst.minutes())


def keys() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(KEY_POOL), tbst.idempotency_keys(max_size=24),
                     tbst.idempotency_keys(max_size=24))


# --- the reference model -----------------------------------------------------------------------


@dataclass
class MAccount:
    code: str
    type: str
    owner_ref: str | None
    floor: int | None
    ceiling: int | None
    status: str = "open"
    posted: int = 0


class Draft(NamedTuple):
    """An entry the model is asked to post: a command, and the entry it reverses if any."""

    command: EntryCommand
    reverses: int | None = None


@dataclass
class MEntry:
    draft: Draft
    view: EntryView

    @property
    def legs(self) -> list[tuple[str, int]]:
        return [(p.account, p.amount_minutes) for p in self.draft.command.postings]


@dataclass
class MHold:
    id: int
    key: str
    code: str
    debit: str
    credit: str
    amount: int
    operator: str
    memo: str
    metadata: dict[str, Any] | None
    expires_at: datetime | None
    #: As the database shows it: "expired" only once a writer swept it (see Model.sync).
    status: str = "pending"
    resolution_key: str | None = None
    posted_entry_id: int | None = None
    #: Who voided it and why: a replayed void must repeat both.
    voided_by: tuple[str, str] | None = None


@dataclass(frozen=True)
class Refusal:
    """The predicted refusal: exactly ``error`` (with these attributes), or, where the library
    does not pin the class down, any subclass of one of ``family``."""

    error: type[TimebankError]
    attrs: dict[str, object] = field(default_factory=dict)
    family: tuple[type[TimebankError], ...] = ()


@dataclass
class PostPlan:
    """What a successful post will do: an entry id per draft (None: new), the new drafts'
    indexes, and for each of them the predicted (account, amount, balance after) legs."""

    ids: list[int | None]
    new: list[int]
    legs: dict[int, list[tuple[str, int, int]]]
    posted: dict[str, int]


def _legs(command: EntryCommand) -> list[tuple[str, int]]:
    return [(p.account, p.amount_minutes) for p in command.postings]


def _sorted_legs(command: EntryCommand) -> list[tuple[str, int]]:
    return sorted(_legs(command))


def batch_differences(a: Draft, b: Draft) -> list[str]:
    """Fields in which two drafts with one key differ (within one batch)."""
    fields = [name for name in ("code", "operator", "memo", "metadata", "occurred_at")
              if getattr(a.command, name) != getattr(b.command, name)]
    if _sorted_legs(a.command) != _sorted_legs(b.command):
        fields.append("postings")
    if a.reverses != b.reverses:
        fields.append("reverses_entry_id")
    return fields


def stored_differences(draft: Draft, stored: MEntry) -> list[str]:
    """Fields in which a draft differs from the entry recorded under its key. An unset
    occurred_at means "when recorded": it matches only an entry stored that way."""
    cmd, view = draft.command, stored.view
    fields = [name for name in ("code", "operator", "memo", "metadata")
              if getattr(cmd, name) != getattr(view, name)]
    expected_at = cmd.occurred_at if cmd.occurred_at is not None else view.recorded_at
    if expected_at != view.occurred_at:
        fields.append("occurred_at")
    if _sorted_legs(cmd) != sorted((p.account, p.amount_minutes) for p in view.postings):
        fields.append("postings")
    if draft.reverses != view.reverses_entry_id:
        fields.append("reverses_entry_id")
    return fields


class Model:
    def __init__(self, now: Callable[[], datetime]) -> None:
        self.now = now
        self.accounts: dict[str, MAccount] = {}
        self.entries: dict[int, MEntry] = {}
        self.entry_ids: dict[str, int] = {}
        self.reversed_by: dict[int, str] = {}  # entry id -> key of its reversal
        self.holds: dict[int, MHold] = {}
        self.hold_ids: dict[str, int] = {}
        self.resolution_keys: dict[str, int] = {}  # resolution key -> hold id
        self.plain_commands: list[EntryCommand] = []  # posted by post/transfer/post_many

    # -- holds --------------------------------------------------------------------------

    def expired(self, hold: MHold) -> bool:
        """Past its expiry: reserves nothing any more, whether or not a writer swept it."""
        if hold.status == "expired":
            return True
        return (hold.status == "pending" and hold.expires_at is not None
                and hold.expires_at <= self.now())

    def live(self, hold: MHold) -> bool:
        return hold.status == "pending" and not self.expired(hold)

    def held_out(self, code: str, *, ignoring: MHold | None = None) -> int:
        return sum(h.amount for h in self.holds.values()
                   if h.debit == code and self.live(h) and h is not ignoring)

    def held_in(self, code: str, *, ignoring: MHold | None = None) -> int:
        return sum(h.amount for h in self.holds.values()
                   if h.credit == code and self.live(h) and h is not ignoring)

    # -- limits -------------------------------------------------------------------------

    def check_leg(
        self, code: str, amount: int, posted: int, *, ignoring: MHold | None = None
    ) -> Refusal | None:
        account = self.accounts[code]
        if account.status != "open":
            return Refusal(AccountStateError)
        if amount < 0 and account.floor is not None:
            available = posted - self.held_out(code, ignoring=ignoring) - account.floor
            if -amount > available:
                return Refusal(LimitExceededError, {
                    "account": code, "limit": "floor", "limit_minutes": account.floor,
                    "available_minutes": available, "requested_minutes": -amount})
        if amount > 0 and account.ceiling is not None:
            room = account.ceiling - posted - self.held_in(code, ignoring=ignoring)
            if amount > room:
                return Refusal(LimitExceededError, {
                    "account": code, "limit": "ceiling", "limit_minutes": account.ceiling,
                    "available_minutes": room, "requested_minutes": amount})
        return None

    # -- entries ------------------------------------------------------------------------

    def plan_post(
        self, drafts: Sequence[Draft], *, ignoring: MHold | None = None
    ) -> Refusal | PostPlan:
        """Predict a post of ``drafts`` in one transaction (single post, batch, reversal)."""
        first: dict[str, int] = {}
        fresh: list[int] = []
        for index, draft in enumerate(drafts):
            key = draft.command.idempotency_key
            if key in first:
                differing = batch_differences(drafts[first[key]], draft)
                if differing:
                    return Refusal(IdempotencyConflictError,
                                   {"key": key, "fields": tuple(differing)})
                continue
            first[key] = index
            fresh.append(index)
        named = {p.account for i in fresh for p in drafts[i].command.postings}
        unknown = sorted(named - self.accounts.keys())
        if unknown:
            return Refusal(AccountNotFoundError, {"codes": tuple(unknown)})
        ids: list[int | None] = [None] * len(drafts)
        new: list[int] = []
        for index in fresh:
            key = drafts[index].command.idempotency_key
            if key in self.entry_ids:
                stored = self.entries[self.entry_ids[key]]
                differing = stored_differences(drafts[index], stored)
                if differing:
                    return Refusal(IdempotencyConflictError,
                                   {"key": key, "fields": tuple(differing)})
                ids[index] = stored.view.id
            else:
                new.append(index)
        posted = {code: a.posted for code, a in self.accounts.items()}
        legs: dict[int, list[tuple[str, int, int]]] = {}
        for index in new:
            legs[index] = []
            for spec in drafts[index].command.postings:
                refusal = self.check_leg(spec.account, spec.amount_minutes,
                                         posted[spec.account], ignoring=ignoring)
                if refusal is not None:
                    return refusal
                posted[spec.account] += spec.amount_minutes
                legs[index].append((spec.account, spec.amount_minutes, posted[spec.account]))
        return PostPlan(ids=ids, new=new, legs=legs, posted=posted)

    def record(self, draft: Draft, view: EntryView) -> None:
        self.entries[view.id] = MEntry(draft, view)
        self.entry_ids[view.idempotency_key] = view.id
        if draft.reverses is not None:
            self.reversed_by[draft.reverses] = view.idempotency_key

    def apply_posted(self, plan: PostPlan) -> None:
        for code, posted in plan.posted.items():
            self.accounts[code].posted = posted

    def reversal(self, entry_id: int, key: str, operator: str, reason: str) -> Draft:
        """The mirror of an entry, its postings in the order the entry lists them (by code)."""
        original = self.entries[entry_id]
        return Draft(EntryCommand(
            idempotency_key=key, code="reversal", operator=operator, memo=reason,
            postings=tuple(PostingSpec(account=a, amount_minutes=-m)
                           for a, m in sorted(original.legs)),
        ), reverses=entry_id)


# --- the machine -------------------------------------------------------------------------------


_SQLITE_TEMPLATE: dict[str, Path] = {}


def migrated_sqlite_copy(directory: Path) -> Path:
    """A new SQLite file holding an empty, migrated ledger: a copy of one file migrated once
    per process (migrating for every example would dominate the run, shrinking included)."""
    if "path" not in _SQLITE_TEMPLATE:
        template_dir = Path(tempfile.mkdtemp(prefix="tb_state_template_"))
        atexit.register(shutil.rmtree, template_dir, ignore_errors=True)
        template = template_dir / "template.db"
        Ledger.open(f"sqlite:///{template}").dispose()
        _SQLITE_TEMPLATE["path"] = template
    target = directory / "ledger.db"
    shutil.copyfile(_SQLITE_TEMPLATE["path"], target)
    return target


class LedgerMachine(RuleBasedStateMachine):
    """Runs on a new SQLite file per example; subclasses choose another database."""

    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.model = Model(lambda: self.now)
        self._cleanup = ExitStack()
        # The database as the last dump saw it, while no write has succeeded since: the
        # "before" of the next refusal (dumps dominate the run time).
        self._snapshot: Snapshot | None = None
        url = self.database_url()
        self.ledger = Ledger.open(url, clock=lambda: self.now)
        self._cleanup.callback(self.ledger.dispose)

    def database_url(self) -> str:
        directory = Path(tempfile.mkdtemp(prefix="tb_state_"))
        self._cleanup.callback(shutil.rmtree, directory, ignore_errors=True)
        return f"sqlite:///{migrated_sqlite_copy(directory)}"

    def teardown(self) -> None:
        self._cleanup.close()

    # -- helpers --------------------------------------------------------------------------

    def refused(self, refusal: Refusal, call: Callable[[], object]) -> None:
        """``call`` must raise exactly ``refusal`` and leave every row as it was."""
        event(f"refused: {refusal.error.__name__}")
        before = self.snapshot()
        with pytest.raises(TimebankError) as caught:
            call()
        exc = caught.value
        if refusal.family:
            assert isinstance(exc, refusal.family), (
                f"expected a typed refusal, got {type(exc).__name__}: {exc}")
        else:
            assert type(exc) is refusal.error, (
                f"expected {refusal.error.__name__}, got {type(exc).__name__}: {exc}")
        for name, value in refusal.attrs.items():
            assert getattr(exc, name) == value, (
                f"{type(exc).__name__}.{name} is {getattr(exc, name)!r}, expected {value!r}"
                f" ({exc})")
        after = dump(self.ledger.engine)
        assert after == before, "a refused operation changed the database"
        self._snapshot = after

    def unchanged(self, call: Callable[[], T]) -> T:
        """``call`` must succeed (a replay or a no-op) without changing any row."""
        event("replay or no-op")
        before = self.snapshot()
        result = call()
        after = dump(self.ledger.engine)
        assert after == before, "a replay changed the database"
        self._snapshot = after
        return result

    def snapshot(self) -> Snapshot:
        return self._snapshot if self._snapshot is not None else dump(self.ledger.engine)

    def wrote(self, call: Callable[[], T]) -> T:
        """Run a write the model expects to succeed (and to change the database)."""
        self._snapshot = None
        return call()

    def known(self) -> list[str]:
        return sorted(self.model.accounts)

    def some_account(self, data: st.DataObject, *, ghosts: bool = True) -> str:
        """A known account; now and then one that was never opened."""
        if ghosts and data.draw(st.integers(0, 19), label="ghost?") == 0:
            return data.draw(st.sampled_from(GHOSTS), label="unknown account")
        return data.draw(st.sampled_from(self.known()), label="account")

    def check_new_view(self, view: EntryView, draft: Draft, legs: list[tuple[str, int, int]]
                       ) -> None:
        cmd = draft.command
        assert view.id not in self.model.entries, "a new entry reused an id"
        assert (view.idempotency_key, view.code, view.operator, view.memo, view.metadata) == (
            cmd.idempotency_key, cmd.code, cmd.operator, cmd.memo, cmd.metadata)
        assert view.occurred_at == (cmd.occurred_at or self.now)
        assert view.recorded_at == self.now
        assert view.reverses_entry_id == draft.reverses
        # Postings are listed by account code; each running balance follows command order.
        assert [(p.account, p.amount_minutes, p.balance_after_minutes)
                for p in view.postings] == sorted(legs)

    def post_one(self, draft: Draft, call: Callable[[], EntryView],
                 *, ignoring: MHold | None = None) -> EntryView | None:
        """Predict, run and check one entry (post, transfer, reversal)."""
        plan = self.model.plan_post([draft], ignoring=ignoring)
        if isinstance(plan, Refusal):
            self.refused(plan, call)
            return None
        if not plan.new:
            view = self.unchanged(call)
            stored = self.model.entries[plan.ids[0] or -1]
            assert view == stored.view, "a replay returned another entry"
            return stored.view
        view = self.wrote(call)
        event("posted: reversal" if draft.reverses is not None else "posted")
        self.check_new_view(view, draft, plan.legs[0])
        self.model.apply_posted(plan)
        self.model.record(draft, view)
        return view

    # -- accounts -------------------------------------------------------------------------

    @initialize()
    def open_base_accounts(self) -> None:
        """The bank (no floor), two members (floor 0) with 500 minutes each."""
        for code, floor in (("bank", None), ("m1", 0), ("m2", 0)):
            view = self.wrote(partial(self.ledger.open_account, code,
                                      "system" if floor is None else "member",
                                      floor_minutes=floor))
            self.model.accounts[code] = MAccount(code, view.type, None, floor, None)
        for code in ("m1", "m2"):
            draft = Draft(EntryCommand(
                idempotency_key=f"seed-{code}", code="seed", operator="alice",
                postings=(PostingSpec(account="bank", amount_minutes=-500),
                          PostingSpec(account=code, amount_minutes=500))))
            self.post_one(draft, partial(self.ledger.post, draft.command))
            self.model.plain_commands.append(draft.command)

    @rule(
        code=st.sampled_from(ACCOUNT_POOL),
        kind=st.sampled_from(["member", "system"]),
        owner_ref=st.sampled_from([None, "person-1"]),
        floor=st.sampled_from([0, None, -120, 30]),
        ceiling=st.sampled_from([None, None, 300, 1000, -10]),
    )
    def open_account(self, code: str, kind: str, owner_ref: str | None, floor: int | None,
                     ceiling: int | None) -> None:
        if floor is not None and ceiling is not None and floor > ceiling:
            ceiling = floor
        existing = self.model.accounts.get(code)
        def call() -> AccountView:
            return self.ledger.open_account(code, kind, owner_ref=owner_ref,
                                            floor_minutes=floor, ceiling_minutes=ceiling)

        if existing is None:
            if (floor is not None and floor > 0) or (ceiling is not None and ceiling < 0):
                # A new account holds 0 minutes: past such a limit from the start. Which
                # typed refusal is not pinned down (set_limits says LimitExceededError).
                self.refused(Refusal(LimitExceededError,
                                     family=(LimitExceededError, InvalidInputError)), call)
                return
            result = self.wrote(call)
            self.model.accounts[code] = MAccount(code, kind, owner_ref, floor, ceiling)
        else:
            wanted = {"type": kind, "owner_ref": owner_ref, "floor_minutes": floor,
                      "ceiling_minutes": ceiling}
            stored = {"type": existing.type, "owner_ref": existing.owner_ref,
                      "floor_minutes": existing.floor, "ceiling_minutes": existing.ceiling}
            differing = tuple(f for f in wanted if wanted[f] != stored[f])
            if differing:
                self.refused(Refusal(AccountExistsError, {"code": code, "fields": differing}),
                             call)
                return
            result = self.unchanged(call)
        account = self.model.accounts[code]
        assert result == self.ledger.account(code)
        assert (result.code, result.type, result.owner_ref, result.status,
                result.floor_minutes, result.ceiling_minutes) == (
            account.code, account.type, account.owner_ref, account.status, account.floor,
            account.ceiling)

    @rule(data=st.data(), action=st.sampled_from(["freeze", "unfreeze", "close"]))
    def change_status(self, data: st.DataObject, action: str) -> None:
        code = self.some_account(data)
        target = {"freeze": "frozen", "unfreeze": "open", "close": "closed"}[action]
        method: Callable[..., AccountView] = getattr(self.ledger, action)
        def call() -> AccountView:
            return method(code, reason=f"{action} by test")

        account = self.model.accounts.get(code)
        if account is None:
            self.refused(Refusal(AccountNotFoundError, {"codes": (code,)}), call)
            return
        allowed = {"frozen": ("open", "frozen"), "open": ("frozen", "open"),
                   "closed": ("open", "frozen", "closed")}[target]
        if account.status not in allowed:
            self.refused(Refusal(AccountStateError), call)
            return
        if target == "closed" and (account.posted or self.model.held_out(code)
                                   or self.model.held_in(code)):
            self.refused(Refusal(AccountStateError), call)
            return
        view = self.wrote(call)
        event(f"status: {account.status} -> {target}")
        account.status = target
        assert view.status == target

    # -- entries --------------------------------------------------------------------------

    @rule(data=st.data(), amount=amounts(), key=keys(), code=st.sampled_from(["svc", "gift"]),
          operator=st.sampled_from(OPS), memo=tbst.memos())
    def transfer(self, data: st.DataObject, *, amount: int, key: str, code: str, operator: str,
                 memo: str) -> None:
        debit = self.some_account(data)
        credit = self.some_account(data)
        if debit == credit:
            return
        draft = Draft(EntryCommand(
            idempotency_key=key, code=code, operator=operator, memo=memo,
            postings=(PostingSpec(account=debit, amount_minutes=-amount),
                      PostingSpec(account=credit, amount_minutes=amount))))
        if self.post_one(draft, lambda: self.ledger.transfer(
                key, debit=debit, credit=credit, amount_minutes=amount, code=code,
                operator=operator, memo=memo)) is not None:
            self.model.plain_commands.append(draft.command)

    def draw_command(self, data: st.DataObject, *, ghosts: bool = True) -> EntryCommand:
        codes = self.known()
        if ghosts and data.draw(st.integers(0, 19), label="ghost?") == 0:
            codes = [*codes, data.draw(st.sampled_from(GHOSTS), label="unknown account")]
        return data.draw(tbst.entry_commands(codes, keys=keys(), amounts=amounts()),
                         label="command")

    @rule(data=st.data())
    def post(self, data: st.DataObject) -> None:
        command = self.draw_command(data)
        if self.post_one(Draft(command), lambda: self.ledger.post(command)) is not None:
            self.model.plain_commands.append(command)

    @rule(data=st.data(), size=st.integers(1, 5))
    def post_many(self, data: st.DataObject, size: int) -> None:
        commands: list[EntryCommand] = []
        for _ in range(size):
            source = data.draw(st.sampled_from(["new", "new", "replay", "repeat"]),
                               label="source")
            if source == "replay" and self.model.plain_commands:
                commands.append(data.draw(st.sampled_from(self.model.plain_commands)))
            elif source == "repeat" and commands:
                commands.append(data.draw(st.sampled_from(commands)))
            else:
                commands.append(self.draw_command(data))
        drafts = [Draft(c) for c in commands]
        plan = self.model.plan_post(drafts)
        def call() -> BatchReceipt:
            return self.ledger.post_many(commands)

        if isinstance(plan, Refusal):
            self.refused(plan, call)
            return
        receipt = self.wrote(call) if plan.new else self.unchanged(call)
        event(f"post_many: {len(plan.new)} new of {len(commands)}")
        entry_ids = receipt.entry_ids
        assert len(entry_ids) == len(commands)
        assert receipt.created_count == len(plan.new)
        assert receipt.replayed_count == len(commands) - len(plan.new)
        by_key: dict[str, int] = {}
        for index, entry_id in enumerate(entry_ids):
            key = commands[index].idempotency_key
            known = plan.ids[index] if plan.ids[index] is not None else by_key.get(key)
            if known is not None:
                assert entry_id == known, f"command {index} got entry {entry_id}, not {known}"
            by_key.setdefault(key, entry_id)
        for index in plan.new:
            view = self.ledger.entry(entry_ids[index])
            self.check_new_view(view, drafts[index], plan.legs[index])
            self.model.record(drafts[index], view)
            self.model.plain_commands.append(commands[index])
        self.model.apply_posted(plan)

    @precondition(lambda self: bool(self.model.plain_commands))
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        """A command posted before, posted again: the same entry, nothing written."""
        command = data.draw(st.sampled_from(self.model.plain_commands))
        stored = self.model.entries[self.model.entry_ids[command.idempotency_key]]
        view = self.unchanged(lambda: self.ledger.post(command))
        assert view == stored.view

    @precondition(lambda self: bool(self.model.plain_commands))
    @rule(data=st.data(), change=st.sampled_from(
        ["code", "operator", "memo", "metadata", "occurred_at", "postings"]))
    def reuse_key(self, data: st.DataObject, change: str) -> None:
        """A key used before, with other content: IdempotencyConflictError naming the field."""
        command = data.draw(st.sampled_from(self.model.plain_commands))
        stored = self.model.entries[self.model.entry_ids[command.idempotency_key]].view
        changes: dict[str, object] = {
            "code": command.code + "-x",
            "operator": command.operator + "-x",
            "memo": command.memo + " (edited)",
            "metadata": {"edited": True} if command.metadata != {"edited": True} else None,
            "occurred_at": stored.occurred_at + timedelta(seconds=1),
        }
        fields = command.model_dump()
        if change == "postings":
            if max(abs(p.amount_minutes) for p in command.postings) * 2 > AMOUNT_MAX_MINUTES:
                return
            fields["postings"] = [{"account": p.account, "amount_minutes": p.amount_minutes * 2}
                                  for p in command.postings]
        else:
            fields[change] = changes[change]
        edited = EntryCommand(**fields)
        self.refused(Refusal(IdempotencyConflictError,
                             {"key": command.idempotency_key, "fields": (change,)}),
                     lambda: self.ledger.post(edited))

    @precondition(lambda self: bool(self.model.entries))
    @rule(data=st.data(), key=keys(), operator=st.sampled_from(OPS),
          reason=st.sampled_from(REASONS))
    def reverse(self, data: st.DataObject, key: str, operator: str, reason: str) -> None:
        entry_id = data.draw(st.sampled_from(sorted(self.model.entries)), label="entry")
        self.reverse_entry(entry_id, key, operator, reason)

    def reverse_entry(self, entry_id: int, key: str, operator: str, reason: str) -> None:
        def call() -> EntryView:
            return self.ledger.reverse(entry_id, idempotency_key=key, operator=operator,
                                       reason=reason)

        prior = self.model.reversed_by.get(entry_id)
        if prior is not None and prior != key:
            self.refused(Refusal(AlreadyReversedError), call)
            return
        self.post_one(self.model.reversal(entry_id, key, operator, reason), call)

    @precondition(lambda self: bool(self.model.reversed_by))
    @rule(data=st.data(), fresh_key=tbst.idempotency_keys(max_size=24))
    def reverse_again(self, data: st.DataObject, fresh_key: str) -> None:
        """Reversing a reversed entry: its own key again is a replay; another key is refused."""
        entry_id = data.draw(st.sampled_from(sorted(self.model.reversed_by)), label="entry")
        reversal = self.model.entries[self.model.entry_ids[self.model.reversed_by[entry_id]]]
        if data.draw(st.booleans(), label="same key?"):
            cmd = reversal.draft.command
            self.reverse_entry(entry_id, cmd.idempotency_key, cmd.operator, cmd.memo)
        else:
            self.reverse_entry(entry_id, fresh_key, "alice", "again")

    # -- holds ----------------------------------------------------------------------------

    @rule(data=st.data(), amount=amounts(), key=keys(),
          expires_in=st.one_of(st.none(), st.integers(0, 90)),
          operator=st.sampled_from(OPS), memo=tbst.memos())
    def hold(self, data: st.DataObject, *, amount: int, key: str, expires_in: int | None,
             operator: str, memo: str) -> None:
        debit = self.some_account(data)
        credit = self.some_account(data)
        if debit == credit:
            return
        expires_at = None if expires_in is None else self.now + timedelta(minutes=expires_in)
        candidate = MHold(id=0, key=key, code="svc", debit=debit, credit=credit,
                          amount=amount, operator=operator, memo=memo, metadata=None,
                          expires_at=expires_at)
        self.hold_with(candidate)

    def hold_with(self, hold: MHold) -> None:  # noqa: PLR0911 - one return per predicted outcome
        model = self.model
        def call() -> HoldView:
            return self.ledger.hold(
                hold.key, debit=hold.debit, credit=hold.credit, amount_minutes=hold.amount,
                code=hold.code, operator=hold.operator, expires_at=hold.expires_at,
                memo=hold.memo, metadata=hold.metadata)

        unknown = sorted({hold.debit, hold.credit} - model.accounts.keys())
        if unknown:
            self.refused(Refusal(AccountNotFoundError, {"codes": tuple(unknown)}), call)
            return
        if hold.key in model.hold_ids:
            stored = model.holds[model.hold_ids[hold.key]]
            differing = tuple(
                name for name, a, b in (
                    ("code", hold.code, stored.code), ("debit", hold.debit, stored.debit),
                    ("credit", hold.credit, stored.credit),
                    ("amount_minutes", hold.amount, stored.amount),
                    ("operator", hold.operator, stored.operator),
                    ("memo", hold.memo, stored.memo), ("metadata", hold.metadata, stored.metadata),
                    ("expires_at", hold.expires_at, stored.expires_at))
                if a != b)
            if differing:
                self.refused(Refusal(IdempotencyConflictError,
                                     {"key": hold.key, "fields": differing}), call)
                return
            view = self.unchanged(call)
            assert view.id == stored.id
            return
        for code in (hold.debit, hold.credit):
            if model.accounts[code].status != "open":
                self.refused(Refusal(AccountStateError), call)
                return
        if hold.expires_at is not None and hold.expires_at <= self.now:
            self.refused(Refusal(HoldExpiredError), call)  # it would never reserve anything
            return
        debit, credit = model.accounts[hold.debit], model.accounts[hold.credit]
        if debit.floor is not None:
            available = debit.posted - model.held_out(debit.code) - debit.floor
            if hold.amount > available:
                self.refused(Refusal(LimitExceededError, {
                    "account": debit.code, "limit": "floor", "limit_minutes": debit.floor,
                    "available_minutes": available, "requested_minutes": hold.amount}), call)
                return
        if credit.ceiling is not None:
            room = credit.ceiling - credit.posted - model.held_in(credit.code)
            if hold.amount > room:
                self.refused(Refusal(LimitExceededError, {
                    "account": credit.code, "limit": "ceiling", "limit_minutes": credit.ceiling,
                    "available_minutes": room, "requested_minutes": hold.amount}), call)
                return
        view = self.wrote(call)
        event("held")
        assert view.id not in model.holds
        assert (view.idempotency_key, view.debit, view.credit, view.amount_minutes, view.status,
                view.expires_at, view.created_at, view.posted_entry_id) == (
            hold.key, hold.debit, hold.credit, hold.amount, "pending", hold.expires_at, self.now,
            None)
        hold.id = view.id
        model.holds[view.id] = hold
        model.hold_ids[hold.key] = view.id

    @precondition(lambda self: bool(self.model.holds))
    @rule(data=st.data())
    def replay_hold(self, data: st.DataObject) -> None:
        stored = self.model.holds[data.draw(st.sampled_from(sorted(self.model.holds)))]
        if data.draw(st.booleans(), label="other amount?"):
            other = MHold(**{**stored.__dict__,
                             "amount": stored.amount - 1 if stored.amount > 1 else 2})
            self.hold_with(other)
        else:
            self.hold_with(stored)

    def pick_hold(self, data: st.DataObject) -> int:
        """Mostly a pending hold; else any hold, or now and then one that does not exist."""
        pending = sorted(i for i, h in self.model.holds.items() if h.status == "pending")
        choice = data.draw(st.integers(0, 9), label="which hold?")
        if choice == 0 or not self.model.holds:
            return max(self.model.holds, default=0) + 1_000
        if choice > 3 and pending:
            return data.draw(st.sampled_from(pending), label="pending hold")
        return data.draw(st.sampled_from(sorted(self.model.holds)), label="hold")

    def resolution_refusal(
        self, hold_id: int, key: str, *, void: bool, amount: int | None = None,
        operator: str = "", memo: str = "",
    ) -> Refusal | int | MHold | None:
        """A refusal, the replayed result (entry id or None), or the pending hold.

        Resolving a resolved hold again with its key and kind is a replay; posting again must
        also repeat the amount, operator and memo of the first post (a void has no content).
        """
        hold = self.model.holds.get(hold_id)
        if hold is None:
            return Refusal(HoldNotFoundError)
        if hold.status in ("posted", "voided"):
            return self.resolved_again(hold, key, void=void, amount=amount, operator=operator,
                                       memo=memo)
        if self.model.expired(hold):
            return Refusal(HoldExpiredError)
        return hold

    def resolved_again(self, hold: MHold, key: str, *, void: bool, amount: int | None,
                       operator: str, memo: str) -> Refusal | int | None:
        wanted = "voided" if void else "posted"
        if hold.resolution_key != key or hold.status != wanted:
            return Refusal(HoldResolvedError)
        if void:
            return None
        entry = self.model.entries[hold.posted_entry_id or -1]
        posted = max(m for _, m in entry.legs)
        fields = [name for name, differs in (
            ("amount_minutes", posted != (hold.amount if amount is None else amount)),
            ("operator", operator != entry.draft.command.operator),
            ("memo", memo != entry.draft.command.memo)) if differs]
        if fields:
            return Refusal(IdempotencyConflictError, {"key": key, "fields": tuple(fields)})
        return hold.posted_entry_id

    @precondition(lambda self: bool(self.model.holds))
    @rule(data=st.data(), key=keys(), operator=st.sampled_from(OPS), memo=tbst.memos(),
          how_much=st.sampled_from(["all", "all", "default", "part", "part", "too_much"]))
    def post_hold(self, data: st.DataObject, key: str, operator: str, memo: str,
                  how_much: str) -> None:
        """Post all of a hold (by default or by naming its amount), part of it, or more."""
        hold_id = self.pick_hold(data)
        held = self.model.holds[hold_id].amount if hold_id in self.model.holds else 1
        part = {"all": held, "default": None, "too_much": min(held + 1, AMOUNT_MAX_MINUTES),
                "part": data.draw(st.integers(1, held), label="part")}[how_much]

        def call() -> EntryView:
            return self.ledger.post_hold(hold_id, idempotency_key=key, operator=operator,
                                         amount_minutes=part, memo=memo)

        state = self.resolution_refusal(hold_id, key, void=False, amount=part,
                                        operator=operator, memo=memo)
        if isinstance(state, Refusal):
            self.refused(state, call)
            return
        if not isinstance(state, MHold):
            replayed = self.unchanged(call)
            assert replayed == self.model.entries[state or -1].view
            return
        hold = state
        amount = hold.amount if part is None else part
        if amount > hold.amount:
            self.refused(Refusal(InvalidAmountError), call)
            return
        draft = Draft(EntryCommand(
            idempotency_key=key, code=hold.code, operator=operator, memo=memo,
            postings=(PostingSpec(account=hold.debit, amount_minutes=-amount),
                      PostingSpec(account=hold.credit, amount_minutes=amount))))
        if key in self.model.entry_ids:  # the key of another entry: same content or not
            self.refused(Refusal(IdempotencyConflictError, {"key": key}), call)
            return
        plan = self.model.plan_post([draft], ignoring=hold)
        if isinstance(plan, Refusal):
            self.refused(plan, call)
            return
        if key in self.model.resolution_keys:  # resolved another hold (voided it)
            self.refused(Refusal(IdempotencyConflictError, {"key": key}), call)
            return
        view = self.wrote(call)
        event("hold posted" if amount == hold.amount else "hold posted in part")
        self.check_new_view(view, draft, plan.legs[0])
        self.model.apply_posted(plan)
        self.model.record(draft, view)
        hold.status, hold.resolution_key, hold.posted_entry_id = "posted", key, view.id
        self.model.resolution_keys[key] = hold.id
        assert self.ledger.get_hold(hold.id).posted_entry_id == view.id

    @precondition(lambda self: bool(self.model.holds))
    @rule(data=st.data(), key=keys(), operator=st.sampled_from(OPS),
          reason=st.sampled_from(REASONS))
    def void_hold(self, data: st.DataObject, key: str, operator: str, reason: str) -> None:
        hold_id = self.pick_hold(data)
        def call() -> HoldView:
            return self.ledger.void_hold(hold_id, idempotency_key=key, operator=operator,
                                         reason=reason)

        state = self.resolution_refusal(hold_id, key, void=True)
        if isinstance(state, Refusal):
            self.refused(state, call)
            return
        if not isinstance(state, MHold):
            self.replay_void(hold_id, call, operator, reason)
            return
        if key in self.model.resolution_keys:
            self.refused(Refusal(IdempotencyConflictError, {"key": key}), call)
            return
        view = self.wrote(call)
        event("hold voided")
        assert view.status == "voided"
        state.status, state.resolution_key = "voided", key
        state.voided_by = (operator, reason)
        self.model.resolution_keys[key] = state.id

    def replay_void(
        self, hold_id: int, call: Callable[[], HoldView], operator: str, reason: str
    ) -> None:
        """The same void again: a replay if operator and reason repeat, else a conflict."""
        first = self.model.holds[hold_id].voided_by
        assert first is not None
        fields = tuple(name for name, asked, stored in (
            ("operator", operator, first[0]), ("reason", reason, first[1])) if asked != stored)
        if fields:
            self.refused(Refusal(IdempotencyConflictError, {"fields": fields}), call)
            return
        assert self.unchanged(call).status == "voided"

    @precondition(lambda self: any(h.status in ("posted", "voided")
                                   for h in self.model.holds.values()))
    @rule(data=st.data(), fresh_key=tbst.idempotency_keys(max_size=24))
    def resolve_again(self, data: st.DataObject, fresh_key: str) -> None:
        """A resolved hold: the same resolution again is a replay; anything else is refused."""
        resolved = sorted(i for i, h in self.model.holds.items()
                          if h.status in ("posted", "voided"))
        hold = self.model.holds[data.draw(st.sampled_from(resolved), label="hold")]
        assert hold.resolution_key is not None
        key = hold.resolution_key if data.draw(st.booleans(), label="same key?") else fresh_key
        if data.draw(st.booleans(), label="void?"):
            self.void_hold_with(hold.id, key)
            return
        amount, operator, memo = None, "alice", ""
        if hold.status == "posted":  # the first post's request, maybe with one change
            first = self.model.entries[hold.posted_entry_id or -1].draft.command
            amount, operator, memo = max(m for _, m in _legs(first)), first.operator, first.memo
            change = data.draw(st.sampled_from(["none", "none", "amount", "operator", "memo"]),
                               label="change")
            if change == "amount":
                amount = amount - 1 if amount > 1 else None
            elif change == "operator":
                operator += "-x"
            elif change == "memo":
                memo += " (edited)"
        self.post_hold_with(hold.id, key, amount=amount, operator=operator, memo=memo)

    def void_hold_with(self, hold_id: int, key: str) -> None:
        def call() -> HoldView:
            return self.ledger.void_hold(hold_id, idempotency_key=key, operator="alice")

        state = self.resolution_refusal(hold_id, key, void=True)
        if isinstance(state, Refusal):
            self.refused(state, call)
        else:
            assert not isinstance(state, MHold)
            self.replay_void(hold_id, call, "alice", "")

    def post_hold_with(self, hold_id: int, key: str, *, amount: int | None, operator: str,
                       memo: str) -> None:
        def call() -> EntryView:
            return self.ledger.post_hold(hold_id, idempotency_key=key, operator=operator,
                                         amount_minutes=amount, memo=memo)

        state = self.resolution_refusal(hold_id, key, void=False, amount=amount,
                                        operator=operator, memo=memo)
        if isinstance(state, Refusal):
            self.refused(state, call)
        else:
            assert not isinstance(state, MHold)
            assert self.unchanged(call) == self.model.entries[state or -1].view

    @rule(minutes=st.integers(1, 120))
    def advance_clock(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    @precondition(lambda self: any(h.expires_at is not None for h in self.model.holds.values()))
    @rule()
    def expire_holds(self) -> None:
        due = [h for h in self.model.holds.values()
               if h.status == "pending" and self.model.expired(h)]
        assert self.wrote(self.ledger.expire_holds) == len(due)
        event(f"expire_holds: {'some' if due else 'none'} due")
        for hold in due:
            hold.status = "expired"

    # -- refusals of malformed commands and unknown things --------------------------------

    MALFORMED: ClassVar[tuple[str, ...]] = (
        "amount:transfer", "amount:hold", "amount:post_hold", "amount:posting",
        "too_many_postings", "one_posting", "repeated_account", "unbalanced",
        "transfer_to_self", "hold_to_self", "batch_too_big", "floor_above_ceiling",
        "float_floor", "unknown_entry", "unknown_hold:post", "unknown_hold:void",
        "unknown_account:freeze")

    @rule(data=st.data(), key=keys(), kind=st.sampled_from(MALFORMED))
    def refuse_malformed(self, data: st.DataObject, key: str, kind: str) -> None:
        """Each is refused before anything is written, whatever the state of the ledger."""
        a, b = data.draw(st.permutations(self.known()), label="accounts")[:2]
        if kind.startswith("amount:"):
            positive = kind != "amount:posting"  # a posting's amount may be negative
            bad = data.draw(tbst.invalid_positive_minutes() if positive
                            else tbst.invalid_minutes(), label="bad amount")
            if kind == "amount:post_hold" and bad is None:
                return  # post_hold(amount_minutes=None) means "all of it"
        else:
            bad = None
        no_hold = max(self.model.holds, default=0) + 1_000
        ok = EntryCommand(idempotency_key=key, code="svc", operator="alice", postings=(
            PostingSpec(account=a, amount_minutes=-1), PostingSpec(account=b, amount_minutes=1)))

        def entry(*legs: tuple[str, object]) -> Callable[[], object]:
            return lambda: self.ledger.post(EntryCommand(
                idempotency_key=key, code="svc", operator="alice",
                postings=tuple(PostingSpec(account=c, amount_minutes=m) for c, m in legs)))

        many = POSTINGS_PER_ENTRY_MAX + 1
        cases: dict[str, tuple[type[TimebankError], Callable[[], object]]] = {
            "amount:transfer": (InvalidAmountError, lambda: self.ledger.transfer(
                key, debit=a, credit=b, amount_minutes=bad, code="svc", operator="alice")),
            "amount:hold": (InvalidAmountError, lambda: self.ledger.hold(
                key, debit=a, credit=b, amount_minutes=bad, code="svc", operator="alice")),
            "amount:post_hold": (InvalidAmountError, lambda: self.ledger.post_hold(
                self.pick_hold(data), idempotency_key=key, operator="alice",
                amount_minutes=bad)),
            "amount:posting": (InvalidAmountError, entry((a, bad), (b, 5))),
            "too_many_postings": (PostingCountError, entry(
                *[(f"leg{i}", 1) for i in range(many - 1)], ("leg-last", -(many - 1)))),
            "one_posting": (PostingCountError, entry((a, 5))),
            "repeated_account": (PostingCountError, entry((a, -5), (a, 5))),
            "unbalanced": (UnbalancedEntryError, entry((a, -5), (b, 6))),
            "transfer_to_self": (PostingCountError, lambda: self.ledger.transfer(
                key, debit=a, credit=a, amount_minutes=5, code="svc", operator="alice")),
            "hold_to_self": (PostingCountError, lambda: self.ledger.hold(
                key, debit=a, credit=a, amount_minutes=5, code="svc", operator="alice")),
            "batch_too_big": (InvalidInputError, lambda: self.ledger.post_many(
                [ok] * (ENTRIES_PER_BATCH_MAX + 1))),
            "floor_above_ceiling": (InvalidInputError, lambda: self.ledger.open_account(
                "new-account", "member", floor_minutes=10, ceiling_minutes=5)),
            "float_floor": (InvalidAmountError, lambda: self.ledger.open_account(
                "new-account", "member", floor_minutes=0.0)),  # type: ignore[arg-type]
            "unknown_entry": (EntryNotFoundError, lambda: self.ledger.reverse(
                max(self.model.entries, default=0) + 1_000, idempotency_key=key,
                operator="alice", reason="")),
            "unknown_hold:post": (HoldNotFoundError, lambda: self.ledger.post_hold(
                no_hold, idempotency_key=key, operator="alice")),
            "unknown_hold:void": (HoldNotFoundError, lambda: self.ledger.void_hold(
                no_hold, idempotency_key=key, operator="alice")),
            "unknown_account:freeze": (AccountNotFoundError, lambda: self.ledger.freeze(
                GHOSTS[0], reason="")),
        }
        error, call = cases[kind]
        self.refused(Refusal(error), call)

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def holds_match_the_model(self) -> None:
        """Hold statuses as stored; a hold past its expiry may or may not be swept yet."""
        with self.ledger.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, status FROM tb_holds")).all()
        stored: dict[int, str] = {int(i): str(status) for i, status in rows}
        assert stored.keys() == self.model.holds.keys()
        for hold_id, status in stored.items():
            hold = self.model.holds[hold_id]
            if hold.status == "pending" and self.model.expired(hold) and status == "expired":
                hold.status = "expired"  # a writer swept it: the model follows
                event("expired hold swept by a writer")
            assert status == hold.status, f"hold {hold_id} is {status}, model says {hold.status}"

    @invariant()
    def balances_match_the_model(self) -> None:
        model = self.model
        for code, account in model.accounts.items():
            balance = self.ledger.balance(code)
            held_out, held_in = model.held_out(code), model.held_in(code)
            assert (balance.posted_minutes, balance.held_out_minutes, balance.held_in_minutes,
                    balance.available_minutes) == (
                account.posted, held_out, held_in, account.posted - held_out), code
            view = self.ledger.account(code)
            assert (view.status, view.floor_minutes, view.ceiling_minutes) == (
                account.status, account.floor, account.ceiling), code
            if account.floor is not None:
                assert account.posted - held_out >= account.floor, f"{code} below its floor"
            if account.ceiling is not None:
                assert account.posted + held_in <= account.ceiling, f"{code} above its ceiling"

    @invariant()
    def books_balance(self) -> None:
        trial = self.ledger.trial_balance()
        assert trial.total_minutes == 0
        assert sum(a.posted for a in self.model.accounts.values()) == 0
        assert {line.account: line.posted_minutes for line in trial.lines} == {
            code: a.posted for code, a in self.model.accounts.items()}
        report = self.ledger.verify()
        assert report.ok, report.problems
        assert report.entries == len(self.model.entries)
        assert report.postings == sum(len(e.legs) for e in self.model.entries.values())


class PostgresLedgerMachine(LedgerMachine):
    """The same machine on one PostgreSQL database, wiped before every example (the schema
    dropped and created again; Ledger.open then migrates the empty database)."""

    server_url: ClassVar[str] = ""

    def database_url(self) -> str:
        engine = sa.create_engine(self.server_url, poolclass=NullPool,
                                  isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("DROP SCHEMA public CASCADE")
                conn.exec_driver_sql("CREATE SCHEMA public")
        finally:
            engine.dispose()
        return self.server_url


class MariaDBLedgerMachine(LedgerMachine):
    """The same machine on one MariaDB database, dropped and created again before every
    example."""

    server_url: ClassVar[str] = ""

    def database_url(self) -> str:
        engine = sa.create_engine(self.server_url, poolclass=NullPool,
                                  isolation_level="AUTOCOMMIT")
        name = engine.url.database
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE `{name}`")
                conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        finally:
            engine.dispose()
        return self.server_url


SQLITE_SETTINGS = settings(max_examples=50, stateful_step_count=30, deadline=None,
                           suppress_health_check=[HealthCheck.too_slow])
POSTGRES_SETTINGS = settings(max_examples=12, stateful_step_count=30, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])
# Each MariaDB example drops and creates a database: shrink one failure, not every one.
MARIADB_SETTINGS = settings(max_examples=10, stateful_step_count=30, deadline=None,
                            suppress_health_check=[HealthCheck.too_slow],
                            report_multiple_bugs=False)


@pytest.mark.slow
def test_ledger_matches_model_on_sqlite() -> None:
    run_state_machine_as_test(LedgerMachine, settings=SQLITE_SETTINGS)


@pytest.mark.slow
@pytest.mark.postgres
def test_ledger_matches_model_on_postgres(postgres_url: str) -> None:
    machine = type("Machine", (PostgresLedgerMachine,), {"server_url": postgres_url})
    run_state_machine_as_test(machine, settings=POSTGRES_SETTINGS)


@pytest.mark.slow
@pytest.mark.mariadb
def test_ledger_matches_model_on_mariadb(mariadb_url: str) -> None:
    machine = type("Machine", (MariaDBLedgerMachine,), {"server_url": mariadb_url})
    run_state_machine_as_test(machine, settings=MARIADB_SETTINGS)
