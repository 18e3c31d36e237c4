"""The time bank: the API station software calls. Each method is one business act in one
database transaction, built from entries of the ledger core; a refusal changes nothing."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, select
from sqlalchemy import exc as sa_exc

from timebank import errors
from timebank._checked import checked
from timebank._db import is_retryable
from timebank._minutes import as_minutes
from timebank.bank import (
    _bookings,
    _clearing,
    _expiry,
    _exposure,
    _gifts,
    _lifecycle,
    _lots,
    _org,
    _people,
    _pools,
    _redeem,
    _services,
)
from timebank.bank._ctx import Act, account_code, code_of, programme_row
from timebank.bank._exchange_api import ExchangeMixin
from timebank.bank._io_api import IOMixin
from timebank.bank._reports_api import ReportsMixin
from timebank.bank.limits import (
    MEMBERS_PER_CALL_MAX,
    NAME_LENGTH_MAX,
    NOTE_LENGTH_MAX,
    PHONE_LENGTH_MAX,
)
from timebank.bank.models import (
    ActsAs,
    BookingView,
    ClearingLevel,
    ClearingReport,
    ExposureView,
    GiftView,
    GrantCandidate,
    LotView,
    MemberKind,
    MemberStatus,
    MemberView,
    NewMember,
    OperatorView,
    PersonalData,
    Policy,
    PolicyView,
    PoolMoveView,
    ProgrammeView,
    RedemptionView,
    RegionLevel,
    RegionView,
    RelationKind,
    Role,
    ServiceView,
    SettlementView,
    Sex,
    SiteKind,
    SiteView,
    check_key,
    check_text,
    require,
    storable,
)
from timebank.bank.schema import (
    beneficiaries,
    is_open,
    lots,
    members,
    operator_roles,
    operators,
    personal,
    policies,
    programmes,
    regions,
    relations,
    sites,
)
from timebank.ledger import Ledger, LedgerTransaction
from timebank.limits import ATTEMPTS_MAX, KEY_LENGTH_MAX, MEMO_LENGTH_MAX

T = TypeVar("T")

#: How long a booking stays open after its scheduled time, unless ``expires_at`` says.
BOOKING_GRACE = timedelta(days=1)


@checked
class TimeBank(ExchangeMixin, ReportsMixin, IOMixin):
    """Programmes, members, operators and services on a :class:`~timebank.Ledger`.

    ``identity_secrets`` maps each programme code to the secret that keys the hashes of its
    members' identities (for example national ID numbers): the library never stores an
    identity, only ``HMAC-SHA256(secret, identity)``. ``exchange_secrets`` maps (our
    programme, partner programme) to the key the two share to sign vouchers. Keep every
    secret out of the database.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        identity_secrets: Mapping[str, bytes],
        exchange_secrets: Mapping[tuple[str, str], bytes] | None = None,
    ) -> None:
        self.ledger = ledger
        self._secrets = dict(identity_secrets)
        self._exchange_secrets = dict(exchange_secrets or {})

    @classmethod
    def open(
        cls,
        url: str,
        *,
        identity_secrets: Mapping[str, bytes],
        exchange_secrets: Mapping[tuple[str, str], bytes] | None = None,
        **ledger_kwargs: Any,
    ) -> TimeBank:
        return cls(
            Ledger.open(url, **ledger_kwargs),
            identity_secrets=identity_secrets,
            exchange_secrets=exchange_secrets,
        )

    def dispose(self) -> None:
        self.ledger.dispose()

    def __enter__(self) -> TimeBank:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.dispose()

    # --- the unit of work -------------------------------------------------------------

    def _act(self, fn: Callable[[Act], T]) -> T:
        """Run one business act in one transaction, retried a bounded number of times when
        the database reports contention or a concurrent writer claimed the same key first
        (the next attempt then finds it, and answers the replay)."""
        for attempt in range(ATTEMPTS_MAX):
            try:
                with self.ledger.transaction() as tx:
                    return fn(Act(tx, self.ledger.clock()))
            except errors.ConcurrencyError:
                pass
            except sa_exc.IntegrityError as exc:
                if not _unique_race(exc):
                    raise errors.IntegrityViolationError(
                        f"the database refused the write: {exc.orig}"
                    ) from exc
            except sa_exc.DBAPIError as exc:
                if not is_retryable(exc):
                    raise errors.StorageError(f"database error: {exc.orig}") from exc
            time.sleep(random.uniform(0, 0.005 * 2**attempt))
        raise errors.ConcurrencyError(f"gave up after {ATTEMPTS_MAX} attempts; retry later")

    def _read(self, fn: Callable[[Connection], T]) -> T:
        # One snapshot for the several statements of a view.
        return self.ledger._read(fn, snapshot=True)

    # --- programmes, policy, regions, sites, operators ----------------------------------

    def create_programme(
        self,
        code: str,
        name: str,
        *,
        policy: Policy,
        root_region: str,
        root_region_name: str,
        root_level: RegionLevel = "province",
        administrator: str,
        administrator_name: str,
    ) -> ProgrammeView:
        """A programme with its root region, its first policy (in force from the beginning)
        and its first administrator, who acts for the whole programme. Creating it again
        with the same definition returns it; another definition raises ExistsError."""
        check_text(code=code, name=name, root_region=root_region, administrator=administrator)
        root = {"code": root_region, "name": root_region_name, "level": root_level}
        admin = {"code": administrator, "name": administrator_name}
        self._act(lambda act: _org.create_programme(act, code, name, policy, root, admin))
        return self.programme(code)

    def set_policy(
        self, programme: str, policy: Policy, *, effective_from: datetime, operator: str
    ) -> PolicyView:
        """A new policy version from ``effective_from`` (now or later; history keeps its
        rules). Administrators of the programme's root region only."""
        return self._act(
            lambda act: _org.set_policy(act, programme, policy, effective_from, operator)
        )

    def add_region(
        self,
        programme: str,
        code: str,
        name: str,
        *,
        level: RegionLevel,
        parent: str,
        operator: str,
    ) -> RegionView:
        check_text(code=code, name=name)
        spec = {"code": code, "name": name, "level": level}
        self._act(lambda act: _org.add_region(act, programme, spec, parent, operator))
        return self.region(programme, code)

    def add_site(
        self, programme: str, code: str, name: str, *, kind: SiteKind, region: str, operator: str
    ) -> SiteView:
        """A station or an institution in ``region``; its ledger accounts open with it."""
        check_text(code=code, name=name)
        self._act(lambda act: _org.add_site(act, programme, code, name, kind, region, operator))
        return self.site(programme, code)

    def add_operator(
        self,
        programme: str,
        code: str,
        name: str,
        *,
        roles: Iterable[Role],
        site: str | None = None,
        region: str | None = None,
        by: str,
    ) -> OperatorView:
        """Staff of one ``site`` or one ``region``, added by an administrator above it."""
        check_text(code=code, name=name)
        chosen = tuple(sorted(set(roles)))
        require(bool(chosen), "an operator has at least one role")
        spec = {"code": code, "name": name}
        self._act(
            lambda act: _org.add_operator(
                act, programme, spec, chosen, site_code=site, region_code=region, by=by
            )
        )
        return self.operator(programme, code)

    # --- members -----------------------------------------------------------------------

    def register_member(
        self,
        programme: str,
        *,
        identity: str,
        display_name: str,
        birth_date: date,
        home_site: str,
        operator: str,
        kind: MemberKind = "person",
        acts_as: ActsAs = "both",
        phone: str | None = None,
        sex: Sex | None = None,
    ) -> MemberView:
        """Register a person or a volunteer group. ``identity`` (a national ID number, a
        group's registration number) is stored only as a keyed hash; ``sex`` (optional) only
        feeds the statistics. Registering the same
        identity again with the same data returns the member; other data raises ExistsError."""
        require(
            storable(display_name) and 0 < len(display_name) <= NAME_LENGTH_MAX,
            "display_name: 1 to 120 characters of text",
        )
        require(
            phone is None or (storable(phone) and len(phone) <= PHONE_LENGTH_MAX),
            "phone: at most 32 characters of text",
        )
        require(type(birth_date) is date, "birth_date is a date")
        require(sex in (None, "female", "male"), "sex: 'female', 'male' or None")
        hashed = _people.identity_hash(self._secret(programme), identity)
        data = {
            "kind": kind,
            "acts_as": acts_as,
            "home_site": home_site,
            "display_name": display_name,
            "birth_date": birth_date,
            "phone": phone,
            "sex": sex,
        }
        member_id = self._act(lambda act: _people.register(act, programme, hashed, data, operator))
        return self.member(member_id)

    def register_members(
        self, programme: str, people: Iterable[NewMember], *, operator: str
    ) -> list[int]:
        """Register many members in one transaction, all or nothing, with the rules of
        :meth:`register_member` (an identity registered before with the same data gives
        its member; other data raises ExistsError and registers nobody). Returns the
        member ids in ``people``'s order. At most ``MEMBERS_PER_CALL_MAX`` a call: a
        province's register goes in calls of that many, each its own transaction."""
        batch = list(people)
        require(all(isinstance(p, NewMember) for p in batch), "people are NewMember objects")
        require(
            len(batch) <= MEMBERS_PER_CALL_MAX,
            f"at most {MEMBERS_PER_CALL_MAX:,} members a call, not {len(batch):,}",
        )
        secret = self._secret(programme)
        hashed = [
            (
                _people.identity_hash(secret, p.identity),
                {**p.model_dump(exclude={"identity"})},
            )
            for p in batch
        ]
        if not hashed:
            return []
        return self._act(lambda act: _people.register_many(act, programme, hashed, operator))

    def find_member(self, programme: str, *, identity: str) -> MemberView:
        hashed = _people.identity_hash(self._secret(programme), identity)

        def find(conn: Connection) -> int:
            programme_id = programme_row(conn, programme).id
            found = conn.execute(
                select(members.c.id).where(
                    members.c.programme_id == programme_id, members.c.identity_hash == hashed
                )
            ).scalar()
            if found is None:
                raise errors.BankObjectNotFoundError("member", "with that identity")
            return int(found)

        return self.member(self._read(find))

    def relate(self, member_id: int, other_id: int, kind: RelationKind, *, operator: str) -> None:
        """Record that ``member_id`` is the ``kind`` of ``other_id`` (and the inverse)."""
        self._act(lambda act: _people.relate(act, member_id, other_id, kind, operator))

    def set_member_status(
        self, member_id: int, status: MemberStatus, *, reason: str, operator: str
    ) -> MemberView:
        """Freeze (nothing moves), unfreeze, mark deceased or close (empty accounts only)."""
        require(
            storable(reason) and len(reason) <= MEMO_LENGTH_MAX, "reason: at most 500 characters"
        )
        self._act(lambda act: _lifecycle.set_status(act, member_id, status, reason, operator))
        return self.member(member_id)

    # --- services ------------------------------------------------------------------------

    def record_service(
        self,
        idempotency_key: str,
        *,
        programme: str,
        volunteer_id: int,
        recipient_ids: Sequence[int],
        site: str,
        service_type: str,
        started_at: datetime,
        ended_at: datetime,
        operator: str,
        rating: int | None = None,
        note: str = "",
    ) -> ServiceView:
        """Record a service; it stays pending until confirmed. Served minutes are whole
        minutes between start and end; credited minutes follow the policy's weight and its
        rounding rule (down)."""
        require(0 < len(idempotency_key) <= KEY_LENGTH_MAX, "idempotency_key: 1 to 128 characters")
        require(storable(note) and len(note) <= NOTE_LENGTH_MAX, "note: at most 500 characters")
        require(rating is None or (type(rating) is int and 1 <= rating <= 5), "rating: 1 to 5")
        for name, moment in (("started_at", started_at), ("ended_at", ended_at)):
            require(
                isinstance(moment, datetime) and moment.utcoffset() is not None,
                f"{name} must be a timezone-aware datetime",
            )
        for member in (volunteer_id, *recipient_ids):
            require(type(member) is int, "member ids are integers")
        data = {
            "volunteer_id": volunteer_id,
            "recipient_ids": list(recipient_ids),
            "site": site,
            "service_type": service_type,
            "started_at": started_at,
            "ended_at": ended_at,
            "rating": rating,
            "note": note,
        }
        service_id = self._act(
            lambda act: _services.record(act, programme, idempotency_key, data, operator)
        )
        return self.service(service_id)

    def confirm_service(
        self, service_id: int, *, operator: str, recipient_id: int | None = None
    ) -> ServiceView:
        """Confirm as a confirmer of the station (``operator``), or record the recipient's
        confirmation (``recipient_id``, entered by a recorder). When the policy's number of
        confirmations is reached, the deposit is posted and its lot created."""
        self._act(lambda act: _services.confirm(act, service_id, operator, recipient_id))
        return self.service(service_id)

    def reject_service(self, service_id: int, *, reason: str, operator: str) -> ServiceView:
        require(
            storable(reason) and 0 < len(reason) <= MEMO_LENGTH_MAX, "reason: 1 to 500 characters"
        )
        self._act(lambda act: _services.reject(act, service_id, reason, operator))
        return self.service(service_id)

    def confirm_due(self, programme: str, *, as_of: datetime, operator: str) -> int:
        """Confirm pending services whose auto-confirmation delay has passed by ``as_of``
        (no background threads: call it from your scheduler). Returns how many."""
        return self._act(lambda act: _services.confirm_due(act, programme, as_of, operator))

    def reverse_service(self, service_id: int, *, reason: str, operator: str) -> ServiceView:
        """An administrator's correction: the deposit is reversed and its minutes leave the
        volunteer's lots. Refused if they have been spent."""
        require(
            storable(reason) and 0 < len(reason) <= MEMO_LENGTH_MAX, "reason: 1 to 500 characters"
        )
        self._act(lambda act: _services.reverse(act, service_id, reason, operator))
        return self.service(service_id)

    def erase_personal_data(self, member_id: int, *, reason: str, operator: str) -> MemberView:
        """Erase the member's name, phone and identity hash on their request, as
        data-protection law requires (administrators of a region at or above the member's
        home). The ledger, lots, seals and audit stay intact: sealed entries name members by
        id only. The birth date stays (the programme's age rules need it) and so does the
        declared sex (anonymous statistics). The identity can no longer find the member, and
        registering it again makes a new member. Erasing again changes nothing."""
        require(
            storable(reason) and 0 < len(reason) <= MEMO_LENGTH_MAX, "reason: 1 to 500 characters"
        )
        self._act(lambda act: _people.erase(act, member_id, reason, operator))
        return self.member(member_id)

    def set_assessed_need(self, member_id: int, *, in_need: bool, operator: str) -> MemberView:
        """Record whether a member is assessed as in need of care (administrators)."""
        require(type(in_need) is bool, "in_need is True or False")
        self._act(lambda act: _people.set_assessed_need(act, member_id, in_need, operator))
        return self.member(member_id)

    # --- redemption ----------------------------------------------------------------------

    def redeem(
        self,
        idempotency_key: str,
        *,
        programme: str,
        member_id: int,
        site: str,
        service_type: str,
        minutes: int,
        operator: str,
        recipient_id: int | None = None,
        occurred_at: datetime | None = None,
    ) -> RedemptionView:
        """Pay ``minutes`` of a member's for care at an institution or station, received by
        the member or (``Policy.spouse_redeems``) their spouse, who must qualify by age
        (``redemption_min_age``) or assessed need. Insufficient minutes raise
        LimitExceededError with ``available_minutes``. The minutes leave the member's lots
        first in, first out; the redemption keeps which lots (where they were earned)."""
        _key(idempotency_key)
        require(occurred_at is None or _aware(occurred_at), "occurred_at must be timezone-aware")
        for member in (member_id, recipient_id):
            require(member is None or type(member) is int, "member ids are integers")
        amount = _positive(minutes)
        data = {
            "member_id": member_id,
            "recipient_id": member_id if recipient_id is None else recipient_id,
            "site": site,
            "service_type": service_type,
            "minutes": amount,
            "occurred_at": occurred_at,
        }
        redemption_id = self._act(
            lambda act: _redeem.redeem(act, programme, idempotency_key, data, operator)
        )
        return self.redemption(redemption_id)

    def give(
        self,
        idempotency_key: str,
        *,
        programme: str,
        giver_id: int,
        receiver_id: int,
        minutes: int,
        operator: str,
        occurred_at: datetime | None = None,
    ) -> GiftView:
        """Give minutes to a relative (``Policy.gift_relations``), within the yearly limit
        (``Policy.gift_yearly_limit_minutes``). Entered by a recorder of the giver's home
        station. The minutes keep their lots' origin, earned day and expiry.
        ``occurred_at`` (default now, never later, not before this calendar year) dates a
        gift recorded after it was given: the policy in force then judges it (the storage
        cap is today's) and it counts in that year's limit. Earlier gifts come in by
        :meth:`import_history`."""
        _key(idempotency_key)
        require(occurred_at is None or _aware(occurred_at), "occurred_at must be timezone-aware")
        for member in (giver_id, receiver_id):
            require(type(member) is int, "member ids are integers")
        amount = _positive(minutes)
        data = {
            "giver_id": giver_id,
            "receiver_id": receiver_id,
            "minutes": amount,
            "occurred_at": occurred_at,
        }
        gift_id = self._act(
            lambda act: _gifts.give(act, programme, idempotency_key, data, operator)
        )
        return self.gift(gift_id)

    def expire(self, programme: str, *, as_of: datetime, operator: str) -> int:
        """Post expiry entries for every lot past its expiry day by ``as_of`` (members under
        the operator's region; region administrators only), to the programme's expired
        account or the region's pool (``Policy.expired_to``). Running it twice posts nothing
        new. Returns how many lots expired."""
        require(
            isinstance(as_of, datetime) and as_of.utcoffset() is not None,
            "as_of must be a timezone-aware datetime",
        )
        return self._act(lambda act: _expiry.expire(act, programme, as_of, operator))

    # --- bookings ------------------------------------------------------------------------

    def book(
        self,
        idempotency_key: str,
        *,
        programme: str,
        member_id: int,
        site: str,
        service_type: str,
        minutes: int,
        scheduled_at: datetime,
        operator: str,
        recipient_id: int | None = None,
        expires_at: datetime | None = None,
    ) -> BookingView:
        """Book a service: hold ``minutes`` of the member's (the same eligibility as
        :meth:`redeem`, judged on the scheduled day). The hold lapses at ``expires_at``
        (default: a day after ``scheduled_at``). Held minutes cannot be redeemed, given,
        donated or booked again; too few free minutes raise LimitExceededError with
        ``available_minutes``."""
        _key(idempotency_key)
        for name, moment in (("scheduled_at", scheduled_at), ("expires_at", expires_at)):
            require(
                (moment is None and name == "expires_at") or _aware(moment),
                f"{name} must be a timezone-aware datetime",
            )
        for member in (member_id, recipient_id):
            require(member is None or type(member) is int, "member ids are integers")
        data = {
            "member_id": member_id,
            "recipient_id": member_id if recipient_id is None else recipient_id,
            "site": site,
            "service_type": service_type,
            "minutes": _positive(minutes),
            "scheduled_at": scheduled_at,
            "expires_at": scheduled_at + BOOKING_GRACE if expires_at is None else expires_at,
        }
        booking_id = self._act(
            lambda act: _bookings.book(act, programme, idempotency_key, data, operator)
        )
        return self.booking(booking_id)

    def complete_booking(
        self,
        booking_id: int,
        *,
        operator: str,
        minutes: int | None = None,
        occurred_at: datetime | None = None,
    ) -> BookingView:
        """The booked care was given: redeem ``minutes`` (default all held; never more) as a
        redemption, first in first out from the member's lots, and release the rest."""
        amount = None if minutes is None else _positive(minutes)
        require(occurred_at is None or _aware(occurred_at), "occurred_at must be timezone-aware")
        self._act(lambda act: _bookings.complete(act, booking_id, amount, operator, occurred_at))
        return self.booking(booking_id)

    def cancel_booking(self, booking_id: int, *, reason: str, operator: str) -> BookingView:
        """Release the booking's minutes."""
        require(
            storable(reason) and 0 < len(reason) <= MEMO_LENGTH_MAX, "reason: 1 to 500 characters"
        )
        self._act(lambda act: _bookings.cancel(act, booking_id, reason, operator))
        return self.booking(booking_id)

    def expire_bookings(self, programme: str, *, operator: str, limit: int = 1_000) -> int:
        """Mark up to ``limit`` holds past their expiry as expired (administrators of the
        programme). Housekeeping only: a lapsed booking already reserves nothing, and its
        hold is released the next time the member's minutes move. The ledger's sweep covers
        every overdue hold of the database, which for each is the state it is already in."""
        require(type(limit) is int and 1 <= limit <= 10_000, "limit: 1 to 10,000")

        def sweep(act: Act) -> int:
            programme_id = programme_row(act.conn, programme).id
            who = _org.actor(act.conn, programme_id, operator)
            if "auditor" in who.roles or "administrator" not in who.roles:
                raise errors.PermissionDeniedError(
                    f"operator {operator!r} may not expire bookings: administrators only"
                )
            return act.tx.expire_holds(limit=limit)

        return self._act(sweep)

    def redemption(self, redemption_id: int) -> RedemptionView:
        return self._read(lambda conn: _redeem.view(conn, redemption_id))

    def gift(self, gift_id: int) -> GiftView:
        return self._read(lambda conn: _gifts.view(conn, gift_id))

    def booking(self, booking_id: int) -> BookingView:
        now = self.ledger.clock()
        return self._read(lambda conn: _bookings.view(conn, booking_id, now))

    # --- pools: donations, grants; estates ------------------------------------------------

    def donate(
        self,
        idempotency_key: str,
        *,
        programme: str,
        member_id: int,
        minutes: int,
        operator: str,
        region: str | None = None,
    ) -> PoolMoveView:
        """Give minutes to a region's pool (default: the pool of the member's home region).
        Entered by a recorder of the member's home station. The pool keeps their lots'
        origin."""
        _key(idempotency_key)
        require(type(member_id) is int, "member ids are integers")
        data = {"member_id": member_id, "minutes": _positive(minutes), "region": region}
        move_id = self._act(
            lambda act: _pools.donate(act, programme, idempotency_key, data, operator)
        )
        return self.pool_move(move_id)

    def grant(
        self,
        idempotency_key: str,
        *,
        programme: str,
        region: str,
        member_id: int,
        minutes: int,
        operator: str,
    ) -> PoolMoveView:
        """Grant minutes from ``region``'s pool to an elder living under it whom one of
        ``Policy.grant_rules`` matches (administrators of the region or above). The minutes
        arrive as lots that keep where they were earned and expire from today, as the
        policy says; refused over the elder's storage cap."""
        _key(idempotency_key)
        require(type(member_id) is int, "member ids are integers")
        data = {"member_id": member_id, "minutes": _positive(minutes), "region": region}
        move_id = self._act(
            lambda act: _pools.grant(act, programme, idempotency_key, data, operator)
        )
        return self.pool_move(move_id)

    def grant_candidates(
        self, programme: str, region: str, *, limit: int = 100
    ) -> list[GrantCandidate]:
        """Active people living under ``region`` whom a grant rule matches, by priority (the
        index of the first rule they match), then oldest first, then member id."""
        require(type(limit) is int and 1 <= limit <= 10_000, "limit: 1 to 10,000")
        now = self.ledger.clock()
        return self._read(lambda conn: _pools.candidates(conn, programme, region, now, limit))

    def pool_move(self, move_id: int) -> PoolMoveView:
        return self._read(lambda conn: _pools.view(conn, move_id))

    def pool_lots_total(self, programme: str, region: str) -> int:
        """The remaining minutes of a region pool's lots (always its ledger balance)."""

        def read(conn: Connection) -> int:
            region_id = _org.region_row(conn, programme_row(conn, programme).id, region).id
            return _lots.open_total(conn, region_id, _lots.POOL)

        return self._read(read)

    def set_beneficiary(
        self, member_id: int, beneficiary_id: int | None, *, operator: str
    ) -> MemberView:
        """Designate whom the member's minutes pass to on their death (``None`` withdraws
        it). With ``Policy.estate_to="beneficiary"``, they receive up to their storage cap;
        the rest, or everything when nobody is designated, goes to the pool."""
        require(beneficiary_id is None or type(beneficiary_id) is int, "member ids are integers")
        self._act(lambda act: _people.set_beneficiary(act, member_id, beneficiary_id, operator))
        return self.member(member_id)

    def set_member_attributes(
        self, member_id: int, attributes: Iterable[str], *, operator: str
    ) -> MemberView:
        """Replace the member's priority attributes ("living_alone", "disabled"...), which
        the policy's grant rules name (administrators)."""
        chosen = frozenset(attributes)
        for name in chosen:
            check_text(attribute=name)
        self._act(lambda act: _people.set_attributes(act, member_id, chosen, operator))
        return self.member(member_id)

    # --- the guarantee ----------------------------------------------------------------------

    def guarantee_exposure(
        self, programme: str, *, region: str | None = None, at: datetime | date | None = None
    ) -> ExposureView:
        """The outstanding liability the guarantor stands behind: member and pool balances
        of the programme, or of the members living under ``region`` and its pools, as
        recorded at ``at`` (a datetime, or a date: the end of that day in the programme's
        calendar; default now)."""
        when = self.ledger.clock() if at is None else at
        require(_aware(when) or type(when) is date, "at is a timezone-aware datetime or a date")
        require(
            type(when) is not date or _clearing.FIRST_DAY <= when < _clearing.LAST_DAY,
            f"at: a day from {_clearing.FIRST_DAY} to {_clearing.LAST_DAY}",
        )
        return self._read(lambda conn: _exposure.exposure(conn, programme, region, when))

    # --- clearing between stations and regions ---------------------------------------------

    def clearing(
        self, programme: str, *, start: date, end: date, level: ClearingLevel = "site"
    ) -> ClearingReport:
        """Minutes redeemed in [start, end) (days of the programme's calendar), by the unit
        where they were earned and the unit where they were redeemed: the gross matrix and
        the net position of each pair, at ``level`` (sites, or the regions of one level of
        the tree). When the period is settled at that level, the report names the
        settlement and the period's minutes recorded after it (``carried_minutes``)."""
        return self._read(lambda conn: _clearing.report(conn, programme, start, end, level))

    def settle(
        self,
        idempotency_key: str,
        *,
        programme: str,
        start: date,
        end: date,
        level: ClearingLevel = "site",
        operator: str,
    ) -> SettlementView:
        """Settle a period's clearing at ``level`` (administrators of the programme): every
        redemption dated before ``end`` that no settlement at that level cleared yet, its
        net positions posted between clearing accounts. Periods of a level are settled in
        order, once each, after they end; the same key again returns the settlement, a
        second settlement of a period raises AlreadySettledError. A redemption dated in a
        settled period but recorded after its settlement falls into the next one, as late
        minutes."""
        _key(idempotency_key)
        settlement_id = self._act(
            lambda act: _clearing.settle(
                act, programme, idempotency_key, level, start, end, operator
            )
        )
        return self.settlement(settlement_id)

    def settlement(self, settlement_id: int) -> SettlementView:
        return self._read(lambda conn: _clearing.view(conn, settlement_id))

    def find_settlement(
        self, programme: str, *, start: date, level: ClearingLevel = "site"
    ) -> SettlementView:
        """The settlement of the period starting on ``start`` at ``level``."""
        found = self._read(lambda conn: _clearing.find(conn, programme, level, start))
        return self.settlement(found)

    # --- reads ---------------------------------------------------------------------------

    def programme(self, code: str) -> ProgrammeView:
        def read(conn: Connection) -> ProgrammeView:
            row = programme_row(conn, code)
            root = conn.execute(
                select(regions.c.code).where(
                    regions.c.programme_id == row.id, regions.c.parent_id.is_(None)
                )
            ).scalar_one()
            version = conn.execute(
                select(policies.c.version)
                .where(policies.c.programme_id == row.id)
                .order_by(policies.c.version.desc())
                .limit(1)
            ).scalar_one()
            return ProgrammeView(
                code=row.code,
                name=row.name,
                root_region=root,
                expired_account=account_code(conn, row.expired_account_id),
                policy_version=version,
            )

        return self._read(read)

    def policy(self, programme: str, *, at: datetime | None = None) -> PolicyView:
        """The policy in force at ``at`` (default: now)."""
        when = self.ledger.clock() if at is None else at

        def read(conn: Connection) -> PolicyView:
            programme_id = programme_row(conn, programme).id
            version, body = _org.policy_at(conn, programme_id, when)
            row = conn.execute(
                select(policies).where(
                    policies.c.programme_id == programme_id, policies.c.version == version
                )
            ).one()
            return PolicyView(
                programme=programme,
                version=version,
                effective_from=row.effective_from,
                policy=body,
                set_by=row.set_by,
            )

        return self._read(read)

    def region(self, programme: str, code: str) -> RegionView:
        def read(conn: Connection) -> RegionView:
            programme_id = programme_row(conn, programme).id
            row = _org.region_row(conn, programme_id, code)
            parent = (
                None
                if row.parent_id is None
                else conn.execute(
                    select(regions.c.code).where(regions.c.id == row.parent_id)
                ).scalar_one()
            )
            return RegionView(
                programme=programme,
                code=row.code,
                name=row.name,
                level=row.level,
                parent=parent,
                pool_account=account_code(conn, row.pool_account_id),
            )

        return self._read(read)

    def site(self, programme: str, code: str) -> SiteView:
        def read(conn: Connection) -> SiteView:
            programme_id = programme_row(conn, programme).id
            row = _org.site_row(conn, programme_id, code)
            region = conn.execute(
                select(regions.c.code).where(regions.c.id == row.region_id)
            ).scalar_one()
            issued = (
                None if row.issued_account_id is None else account_code(conn, row.issued_account_id)
            )
            return SiteView(
                programme=programme,
                code=row.code,
                name=row.name,
                kind=row.kind,
                region=region,
                issued_account=issued,
                redeemed_account=account_code(conn, row.redeemed_account_id),
            )

        return self._read(read)

    def sites(self, programme: str) -> list[SiteView]:
        """The programme's stations and institutions, by code."""

        def read(conn: Connection) -> list[str]:
            programme_id = programme_row(conn, programme).id
            rows = conn.execute(
                select(sites.c.code)
                .where(sites.c.programme_id == programme_id)
                .order_by(sites.c.code)
            )
            return [str(code) for code in rows.scalars()]

        return [self.site(programme, code) for code in self._read(read)]

    def operator(self, programme: str, code: str) -> OperatorView:
        def read(conn: Connection) -> OperatorView:
            programme_id = programme_row(conn, programme).id
            row = conn.execute(
                select(operators).where(
                    operators.c.programme_id == programme_id, operators.c.code == code
                )
            ).first()
            if row is None:
                raise errors.BankObjectNotFoundError("operator", code)
            roles = conn.execute(
                select(operator_roles.c.role)
                .where(operator_roles.c.operator_id == row.id)
                .order_by(operator_roles.c.role)
            ).scalars()
            site = None if row.site_id is None else code_of(conn, sites, row.site_id)
            region = None if row.region_id is None else code_of(conn, regions, row.region_id)
            return OperatorView(
                programme=programme,
                code=row.code,
                name=row.name,
                site=site,
                region=region,
                roles=tuple(roles),
            )

        return self._read(read)

    def member(self, member_id: int) -> MemberView:
        now = self.ledger.clock()

        def read(conn: Connection) -> MemberView:
            row = _people.member_row(conn, member_id)
            code = account_code(conn, row.account_id)
            return MemberView(
                id=row.id,
                programme=code_of(conn, programmes, row.programme_id),
                kind=row.kind,
                acts_as=row.acts_as,
                home_site=code_of(conn, sites, row.home_site_id),
                account=code,
                status=row.status,
                status_reason=row.status_reason,
                assessed_need=bool(row.assessed_need),
                attributes=tuple(sorted(_pools.attributes_of(conn, row.id))),
                beneficiary_id=conn.execute(
                    select(beneficiaries.c.beneficiary_id).where(
                        beneficiaries.c.member_id == row.id
                    )
                ).scalar(),
                balance_minutes=LedgerTransaction(conn).balance(code).posted_minutes,
                held_minutes=_bookings.held_minutes(conn, row.account_id, now),
            )

        return self._read(read)

    def personal_data(self, member_id: int) -> PersonalData:
        def read(conn: Connection) -> PersonalData:
            row = conn.execute(select(personal).where(personal.c.member_id == member_id)).first()
            if row is None:
                raise errors.BankObjectNotFoundError("member", member_id)
            return PersonalData(
                display_name=row.display_name,
                birth_date=row.birth_date,
                phone=row.phone,
                sex=row.sex,
                erased_at=row.erased_at,
            )

        return self._read(read)

    def relations(self, member_id: int) -> dict[int, str]:
        """The member's relations: other member id -> what the member is to them."""

        def read(conn: Connection) -> dict[int, str]:
            rows = conn.execute(
                select(relations.c.other_id, relations.c.kind).where(
                    relations.c.member_id == member_id
                )
            )
            return {row.other_id: row.kind for row in rows}

        return self._read(read)

    def service(self, service_id: int) -> ServiceView:
        return self._read(lambda conn: _services.view(conn, service_id))

    def lots(self, member_id: int, *, open_only: bool = True) -> list[LotView]:
        """The member's lots in consumption order (first in, first out)."""

        def read(conn: Connection) -> list[LotView]:
            query = select(lots).where(lots.c.member_id == member_id)
            if open_only:
                query = query.where(is_open(lots))
            rows = conn.execute(query.order_by(lots.c.earned_on, lots.c.id)).all()
            return [
                LotView(
                    id=row.id,
                    member_id=row.member_id,
                    minutes=row.minutes,
                    remaining_minutes=row.remaining_minutes,
                    origin_site=code_of(conn, sites, row.origin_site_id),
                    earned_on=row.earned_on,
                    expires_on=row.expires_on,
                    source_entry_id=row.source_entry_id,
                )
                for row in rows
            ]

        return self._read(read)

    def lots_total(self, member_id: int) -> int:
        return self._read(lambda conn: _lots.open_total(conn, member_id))

    def _secret(self, programme: str) -> bytes:
        try:
            return self._secrets[programme]
        except KeyError:
            raise errors.InvalidInputError(
                f"no identity secret for programme {programme!r}: pass it in identity_secrets"
            ) from None


def _key(key: str) -> None:
    check_key(key)
    # Keys the library writes itself: a completed booking's redemption, a death's estate.
    require(
        not key.startswith(("booking:", "estate:")),
        "idempotency keys starting 'booking:' or 'estate:' are reserved",
    )


def _aware(moment: object) -> bool:
    return isinstance(moment, datetime) and moment.utcoffset() is not None


def _positive(minutes: int) -> int:
    amount = as_minutes(minutes, what="minutes")
    if amount < 0:
        raise errors.InvalidAmountError("minutes must be positive")
    return amount


def _unique_race(exc: sa_exc.IntegrityError) -> bool:
    """A unique key another writer claimed between our look-up and our insert."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == "23505":
        return True
    args = getattr(orig, "args", ())
    if args and args[0] == 1062:  # MySQL/MariaDB duplicate entry
        return True
    return "UNIQUE constraint failed" in str(orig)
