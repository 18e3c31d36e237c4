"""Services: recorded pending, confirmed (which posts the deposit and creates its lot),
rejected, confirmed automatically when due, or reversed by an administrator."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from timebank import errors
from timebank.bank import _lots, _pools
from timebank.bank._ctx import Act, account_code, code_of, one, programme_row
from timebank.bank._org import Actor, actor, authorize, policy_at, site_row
from timebank.bank._people import member_row, require_active
from timebank.bank.limits import RECIPIENTS_PER_SERVICE_MAX, SERVICES_PER_SWEEP_MAX
from timebank.bank.models import Policy, ServiceType, ServiceView, credited_minutes
from timebank.bank.schema import (
    confirmations,
    lots,
    members,
    pool_lots,
    programmes,
    regions,
    service_recipients,
    services,
    sites,
)

_COMPARED = (
    "volunteer_id",
    "site_id",
    "service_type",
    "started_at",
    "ended_at",
    "rating",
    "note",
)


def record(act: Act, programme_code: str, key: str, data: dict[str, Any], operator: str) -> int:
    """Record a pending service; the same key and content again is a replay."""
    programme = programme_row(act.conn, programme_code)
    site = site_row(act.conn, programme.id, data["site"])
    authorize(act.conn, programme.id, operator, "recorder", site=site)
    wanted = {**{k: data[k] for k in _COMPARED if k in data}, "site_id": site.id}
    recipients = sorted(set(data["recipient_ids"]))
    replay = _replay(act.conn, key, programme.id, wanted, recipients)
    if replay is not None:
        return replay
    check_shape(site, data["started_at"], data["ended_at"], act.now, recipients,
                data["volunteer_id"])
    version, policy = policy_at(act.conn, programme.id, data["started_at"])
    kind, raw, credited = credit(
        policy, version, data["service_type"], data["started_at"], data["ended_at"]
    )
    volunteer = member_row(act.conn, data["volunteer_id"], lock=True)
    _check_people(act.conn, volunteer, recipients, programme.id)
    _check_overlap(act.conn, volunteer.id, data["started_at"], data["ended_at"])
    service_id: int = act.conn.execute(
        insert(services)
        .values(
            programme_id=programme.id,
            idempotency_key=key,
            **wanted,
            raw_minutes=raw,
            weight_permille=kind.weight_permille,
            credited_minutes=credited,
            policy_version=version,
            status="pending",
            reason="",
            recorded_by=operator,
            recorded_at=act.now,
        )
        .returning(services.c.id)
    ).scalar_one()
    act.conn.execute(
        insert(service_recipients), [{"service_id": service_id, "member_id": m} for m in recipients]
    )
    return service_id


def _replay(
    conn: Connection, key: str, programme_id: int, wanted: dict[str, Any], recipients: list[int]
) -> int | None:
    row = conn.execute(select(services).where(services.c.idempotency_key == key)).first()
    if row is None:
        return None
    fields = [name for name, value in wanted.items() if getattr(row, name) != value]
    if row.programme_id != programme_id:
        fields.append("programme")
    if _recipients(conn, row.id) != tuple(recipients):
        fields.append("recipient_ids")
    if fields:
        raise errors.IdempotencyConflictError(key, fields)
    return int(row.id)


# The rules below are pure (no database): the row engine and the bulk import
# (``_bulk_history``) judge with the same code, so they cannot drift apart.


def check_shape(  # noqa: PLR0917 - the parts of a service the rules look at
    site: Row[Any],
    started_at: datetime,
    ended_at: datetime,
    now: datetime,
    recipients: Sequence[int],
    volunteer_id: int,
) -> None:
    if site.kind == "institution":
        raise errors.InvalidInputError(
            f"{site.code!r} is an institution: services are recorded at stations"
        )
    if ended_at <= started_at:
        raise errors.InvalidInputError("a service ends after it starts")
    if started_at > now:
        raise errors.InvalidInputError("a service cannot start in the future")
    if ended_at > now:
        raise errors.InvalidInputError("a service is recorded once it has ended")
    if not 1 <= len(set(recipients)) <= RECIPIENTS_PER_SERVICE_MAX:
        raise errors.InvalidInputError(
            f"a service has 1 to {RECIPIENTS_PER_SERVICE_MAX} distinct recipients"
        )
    if volunteer_id in recipients:
        raise errors.InvalidInputError("a volunteer cannot serve themselves")


def credit(
    policy: Policy, version: int, service_type: str, started_at: datetime, ended_at: datetime
) -> tuple[ServiceType, int, int]:
    """The service type, served minutes and credited minutes of a service, or the policy's
    refusal."""
    kind = policy.service_types.get(service_type)
    if kind is None:
        raise errors.PolicyViolationError(
            f"service type {service_type!r} is not in the catalogue of policy version {version}"
        )
    raw = int((ended_at - started_at) / timedelta(minutes=1))
    if raw > policy.service_minutes_max:
        raise errors.PolicyViolationError(
            f"a service of {raw} minutes is longer than the {policy.service_minutes_max} "
            "the policy allows"
        )
    credited = credited_minutes(raw, kind.weight_permille)
    if credited < 1:
        raise errors.PolicyViolationError(f"{raw} minutes of {service_type} credit nothing")
    return kind, raw, credited


def check_roles(volunteer: Row[Any], recipients: Iterable[Row[Any]]) -> None:
    """Who may serve and be served: ``recipients`` in member id order."""
    if volunteer.acts_as == "recipient":
        raise errors.MemberStateError(f"member {volunteer.id} is registered as a recipient only")
    for row in recipients:
        if row.acts_as == "volunteer":
            raise errors.MemberStateError(f"member {row.id} is registered as a volunteer only")


def _check_people(
    conn: Connection, volunteer: Row[Any], recipients: list[int], programme_id: int
) -> None:
    require_active(conn, [volunteer.id, *recipients], programme_id)
    query = select(members.c.id, members.c.acts_as).where(members.c.id.in_(recipients))
    check_roles(volunteer, conn.execute(query.order_by(members.c.id)))


def _check_overlap(conn: Connection, volunteer_id: int, start: datetime, end: datetime) -> None:
    """Under the volunteer's row lock, so two overlapping records cannot both pass."""
    other = conn.execute(
        select(services.c.id)
        .where(
            services.c.volunteer_id == volunteer_id,
            services.c.status.in_(("pending", "confirmed")),
            services.c.started_at < end,
            services.c.ended_at > start,
        )
        .order_by(services.c.id)  # the same service named whatever the plan
        .limit(1)
    ).scalar()
    if other is not None:
        raise errors.OverlappingServiceError(volunteer_id, other)


def _recipients(conn: Connection, service_id: int) -> tuple[int, ...]:
    found = conn.execute(
        select(service_recipients.c.member_id)
        .where(service_recipients.c.service_id == service_id)
        .order_by(service_recipients.c.member_id)
    ).scalars()
    return tuple(found)


def service_row(conn: Connection, service_id: int, *, lock: bool = False) -> Row[Any]:
    query = select(services).where(services.c.id == service_id)
    if lock:
        query = query.with_for_update()
    return one(conn, query, "service", service_id)


# --- confirmation --------------------------------------------------------------------------


def confirm(act: Act, service_id: int, operator: str, recipient_id: int | None) -> None:
    """One party confirms: the recipient's side (``recipient_id``, entered by a recorder of
    the station) or a confirmer of the station. Confirming twice is a replay."""
    service = service_row(act.conn, service_id, lock=True)
    site = act.conn.execute(select(sites).where(sites.c.id == service.site_id)).one()
    if recipient_id is None:
        authorize(act.conn, service.programme_id, operator, "confirmer", site=site)
        party = "operator"
    else:
        authorize(act.conn, service.programme_id, operator, "recorder", site=site)
        if recipient_id not in _recipients(act.conn, service_id):
            raise errors.InvalidInputError(
                f"member {recipient_id} is not a recipient of service {service_id}"
            )
        party = "recipient"
    done = act.conn.execute(
        select(confirmations.c.party).where(confirmations.c.service_id == service_id)
    ).scalars()
    if party in set(done) or service.status == "confirmed":
        return  # nothing to add: a replay, or a confirmation after the deposit was posted
    if service.status != "pending":
        raise errors.ServiceStateError(f"service {service_id} is {service.status}")
    by = operator if recipient_id is None else f"member:{recipient_id}"
    _add_confirmation(act, service, party, by, operator)


def _add_confirmation(act: Act, service: Row[Any], party: str, by: str, operator: str) -> None:
    """Record ``by``'s confirmation (entered by ``operator``, whom the entry names)."""
    act.conn.execute(
        insert(confirmations).values(
            service_id=service.id, party=party, confirmed_by=by, confirmed_at=act.now
        )
    )
    parties = set(
        act.conn.execute(
            select(confirmations.c.party).where(confirmations.c.service_id == service.id)
        ).scalars()
    )
    _version, policy = policy_at(act.conn, service.programme_id, service.started_at)
    if "automatic" in parties or len(parties) >= policy.confirmations_required:
        _deposit(act, service, operator, policy)


def _deposit(act: Act, service: Row[Any], operator: str, policy: Policy) -> None:
    """Post the deposit and create its lot. The weight is the service's policy's; the
    storage cap is the one in force now: over it, the deposit is refused (the service stays
    pending) or its excess goes to the pool of the volunteer's home region."""
    volunteer = member_row(act.conn, service.volunteer_id)
    if volunteer.status != "active":
        raise errors.MemberStateError(f"member {volunteer.id} is {volunteer.status}")
    site = act.conn.execute(select(sites).where(sites.c.id == service.site_id)).one()
    _, policy_now = policy_at(act.conn, service.programme_id, act.now)
    kept, excess = _pools.split_at_cap(act, volunteer, service.credited_minutes, policy_now)
    legs = {
        account_code(act.conn, site.issued_account_id): -service.credited_minutes,
        account_code(act.conn, volunteer.account_id): kept,
    }
    # The pool is looked up only when minutes go there: most deposits are under any cap.
    region_id = _pools.home_region_id(act.conn, volunteer) if excess else None
    if region_id is not None:
        legs[_pools.pool_code(act.conn, region_id)] = excess
    entry_id = _pools.post_legs(
        act,
        f"service-{service.id}-deposit",
        legs,
        code="deposit",
        operator=operator,
        occurred_at=service.ended_at,
        memo=f"service {service.id}: {service.service_type}",
        metadata={
            "service_id": service.id,
            "service_type": service.service_type,
            "raw_minutes": service.raw_minutes,
            "weight_permille": service.weight_permille,
            "credited_minutes": service.credited_minutes,
            "diverted_minutes": excess,
        },
    )
    earned_on = policy.local_date(service.ended_at)
    if kept:
        _lots.create(
            act.conn,
            member_id=volunteer.id,
            minutes=kept,
            origin_site_id=site.id,
            earned_on=earned_on,
            expiry_days=policy.lot_expiry_days,
            source_entry_id=entry_id,
        )
    if region_id is not None:
        _lots.create_pool_lot(
            act.conn,
            region_id=region_id,
            minutes=excess,
            origin_site_id=site.id,
            earned_on=earned_on,
            source_entry_id=entry_id,
        )
    act.conn.execute(
        update(services)
        .where(services.c.id == service.id)
        .values(status="confirmed", deposit_entry_id=entry_id, decided_at=act.now)
    )


def _fits_cap(act: Act, service: Row[Any], volunteer: Row[Any]) -> bool:
    """Whether the deposit would be accepted under the storage cap in force now."""
    _, policy = policy_at(act.conn, service.programme_id, act.now)
    if policy.cap_excess == "pool":
        return True
    left = _pools.room(act, volunteer, policy)
    return left is None or service.credited_minutes <= left


def reject(act: Act, service_id: int, reason: str, operator: str) -> None:
    service = service_row(act.conn, service_id, lock=True)
    site = act.conn.execute(select(sites).where(sites.c.id == service.site_id)).one()
    authorize(act.conn, service.programme_id, operator, "confirmer", site=site)
    if service.status == "rejected" and service.reason == reason:
        return
    if service.status != "pending":
        raise errors.ServiceStateError(f"service {service_id} is {service.status}")
    act.conn.execute(
        update(services)
        .where(services.c.id == service_id)
        .values(status="rejected", reason=reason, decided_at=act.now)
    )


def confirm_due(act: Act, programme_code: str, as_of: datetime, operator: str) -> int:
    """Confirm the pending services, in the operator's scope, whose policy's delay has passed
    by ``as_of``. At most ``SERVICES_PER_SWEEP_MAX`` per call; returns how many."""
    if as_of > act.now:
        raise errors.InvalidInputError("confirm_due looks back, not ahead: as_of is in the future")
    programme = programme_row(act.conn, programme_code)
    who = actor(act.conn, programme.id, operator)
    if "auditor" in who.roles or not who.roles & {"confirmer", "administrator"}:
        raise errors.PermissionDeniedError(f"operator {operator!r} may not confirm services")
    confirmed = 0
    for service in _due_candidates(act.conn, programme.id, as_of, who):
        _version, policy = policy_at(act.conn, programme.id, service.started_at)
        delay = policy.auto_confirm_after_minutes
        if delay is None or service.ended_at + timedelta(minutes=delay) > as_of:
            continue
        locked = service_row(act.conn, service.id, lock=True)
        if locked.status != "pending":
            continue
        volunteer = member_row(act.conn, locked.volunteer_id)
        if volunteer.status != "active" or not _fits_cap(act, locked, volunteer):
            continue  # stays pending until the member is active again, or has room
        _add_confirmation(act, locked, "automatic", operator, operator)
        confirmed += 1
        if confirmed == SERVICES_PER_SWEEP_MAX:
            break
    return confirmed


def _due_candidates(
    conn: Connection, programme_id: int, as_of: datetime, who: Actor
) -> list[Row[Any]]:
    query = (
        select(services.c.id, services.c.started_at, services.c.ended_at)
        .join(sites, sites.c.id == services.c.site_id)
        .join(regions, regions.c.id == sites.c.region_id)
        .where(
            services.c.programme_id == programme_id,
            services.c.status == "pending",
            services.c.ended_at <= as_of,
        )
        .order_by(services.c.ended_at, services.c.id)
        .limit(SERVICES_PER_SWEEP_MAX * 4)
    )
    if who.region_path is not None:
        query = query.where(regions.c.path.startswith(who.region_path))
    else:
        query = query.where(sites.c.id == who.site_id)
    return list(conn.execute(query))


# --- reversal ------------------------------------------------------------------------------


def reverse(act: Act, service_id: int, reason: str, operator: str) -> None:
    """Take a confirmed service's minutes back (an administrator's correction): the deposit
    is reversed, and the minutes leave the service's own lot first, then first in, first out.
    Refused, changing nothing, if the volunteer has spent them."""
    service = service_row(act.conn, service_id, lock=True)
    site = act.conn.execute(select(sites).where(sites.c.id == service.site_id)).one()
    authorize(
        act.conn, service.programme_id, operator, "administrator", site=site, region_admin=True
    )
    if service.status == "reversed":
        return
    if service.status != "confirmed":
        raise errors.ServiceStateError(
            f"service {service_id} is {service.status}: nothing to reverse"
        )
    volunteer = member_row(act.conn, service.volunteer_id, lock=True)
    if volunteer.status != "active":
        raise errors.MemberStateError(
            f"member {volunteer.id} is {volunteer.status}: nothing moves on their account"
        )
    entry = act.tx.reverse(
        service.deposit_entry_id,
        idempotency_key=f"service-{service.id}-reversal",
        operator=operator,
        reason=reason,
    )
    own_lot = act.conn.execute(
        select(lots.c.id, lots.c.minutes).where(lots.c.source_entry_id == service.deposit_entry_id)
    ).first()
    if own_lot is not None:
        _lots.consume(act.conn, volunteer.id, own_lot.minutes, first_lot_id=own_lot.id)
    pool_lot = _diverted_lot(act.conn, service.deposit_entry_id)
    if pool_lot is not None:
        _lots.consume(
            act.conn,
            pool_lot.region_id,
            pool_lot.minutes,
            first_lot_id=pool_lot.id,
            holder=_lots.POOL,
        )
    act.conn.execute(
        update(services)
        .where(services.c.id == service_id)
        .values(status="reversed", reason=reason, reversal_entry_id=entry.id, decided_at=act.now)
    )


def _diverted_lot(conn: Connection, deposit_entry_id: int | None) -> Row[Any] | None:
    """The pool lot a deposit made of the minutes over the volunteer's cap, if any."""
    if deposit_entry_id is None:
        return None
    row = conn.execute(
        select(pool_lots.c.id, pool_lots.c.region_id, pool_lots.c.minutes).where(
            pool_lots.c.source_entry_id == deposit_entry_id
        )
    ).first()
    return row  # type: ignore[return-value]


# --- reading -------------------------------------------------------------------------------


def view(conn: Connection, service_id: int) -> ServiceView:
    row = service_row(conn, service_id)
    diverted = _diverted_lot(conn, row.deposit_entry_id)
    by = conn.execute(
        select(confirmations.c.confirmed_by)
        .where(confirmations.c.service_id == service_id)
        .order_by(confirmations.c.confirmed_at, confirmations.c.party)
    ).scalars()
    return ServiceView(
        id=row.id,
        idempotency_key=row.idempotency_key,
        programme=code_of(conn, programmes, row.programme_id),
        volunteer_id=row.volunteer_id,
        recipient_ids=_recipients(conn, service_id),
        site=code_of(conn, sites, row.site_id),
        service_type=row.service_type,
        started_at=row.started_at,
        ended_at=row.ended_at,
        raw_minutes=row.raw_minutes,
        weight_permille=row.weight_permille,
        credited_minutes=row.credited_minutes,
        policy_version=row.policy_version,
        rating=row.rating,
        note=row.note,
        status=row.status,
        reason=row.reason,
        recorded_by=row.recorded_by,
        confirmed_by=tuple(by),
        deposit_entry_id=row.deposit_entry_id,
        reversal_entry_id=row.reversal_entry_id,
        diverted_minutes=0 if diverted is None else diverted.minutes,
    )
