"""Programmes, their policy versions, the region tree, sites and operators; and the one
permission check every write passes through."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select

from timebank import errors
from timebank.bank._ctx import Act, differences, one, programme_row
from timebank.bank.limits import REGION_DEPTH_MAX
from timebank.bank.models import Policy, PolicyView, Role
from timebank.bank.schema import (
    operator_roles,
    operators,
    policies,
    programmes,
    regions,
    sites,
)
from timebank.models import AccountSpec

#: Version 1 of a policy applies from the beginning: services recorded late, with an earlier
#: start, still find the rules of their programme.
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)
LEVELS = ("province", "city", "county", "township")


def open_system_account(act: Act, code: str, type_: str, *, floor: int | None) -> int:
    act.tx.open_accounts([AccountSpec(code=code, type=type_, floor_minutes=floor)])
    return act.tx.account(code).id


# --- programmes and policy ---------------------------------------------------------------


def create_programme(  # noqa: PLR0917 - one argument per part of the programme
    act: Act, code: str, name: str, policy: Policy, root: dict[str, str], admin: dict[str, str]
) -> tuple[int, bool]:
    """Create a programme with its root region, first policy and first administrator.
    Returns (programme id, created); the same definition again is a replay."""
    existing = act.conn.execute(select(programmes).where(programmes.c.code == code)).first()
    if existing is not None:
        _same_programme(act.conn, existing, name, policy, root, admin)
        return existing.id, False
    expired = open_system_account(act, f"{code}:expired", "programme_expired", floor=None)
    programme_id = act.conn.execute(
        insert(programmes)
        .values(code=code, name=name, expired_account_id=expired, created_at=act.now)
        .returning(programmes.c.id)
    ).scalar_one()
    insert_policy(act.conn, programme_id, 1, BEGINNING, policy, admin["code"], act.now)
    root_id = insert_region(act, programme_id, code, root, parent=None)
    insert_operator(act, programme_id, admin, ("administrator",), site_id=None, region_id=root_id)
    return programme_id, True


def _same_programme(  # noqa: PLR0917
    conn: Connection,
    row: Row[Any],
    name: str,
    policy: Policy,
    root: dict[str, str],
    admin: dict[str, str],
) -> None:
    first = conn.execute(
        select(policies.c.body).where(policies.c.programme_id == row.id, policies.c.version == 1)
    ).scalar_one()
    root_row = conn.execute(
        select(regions).where(regions.c.programme_id == row.id, regions.c.parent_id.is_(None))
    ).one()
    fields = differences({"name": row.name}, {"name": name})
    if Policy(**first) != policy:
        fields.append("policy")
    if (root_row.code, root_row.name, root_row.level) != (
        root["code"],
        root["name"],
        root["level"],
    ):
        fields.append("root_region")
    if fields:
        raise errors.ExistsError("programme", row.code, fields)


def insert_policy(  # noqa: PLR0917 - the columns of one row
    conn: Connection,
    programme_id: int,
    version: int,
    effective_from: datetime,
    policy: Policy,
    set_by: str,
    now: datetime,
) -> None:
    conn.execute(
        insert(policies).values(
            programme_id=programme_id,
            version=version,
            effective_from=effective_from,
            body=policy.model_dump(mode="json"),
            set_by=set_by,
            created_at=now,
        )
    )


def policy_at(conn: Connection, programme_id: int, when: datetime) -> tuple[int, Policy]:
    """The version in force at ``when``: the latest that took effect at or before it."""
    row = conn.execute(
        select(policies.c.version, policies.c.body)
        .where(policies.c.programme_id == programme_id, policies.c.effective_from <= when)
        .order_by(policies.c.effective_from.desc())
        .limit(1)
    ).first()
    if row is None:  # before BEGINNING: version 1 is in force from the beginning
        row = conn.execute(
            select(policies.c.version, policies.c.body).where(
                policies.c.programme_id == programme_id, policies.c.version == 1
            )
        ).one()
    return row.version, Policy(**row.body)


def set_policy(
    act: Act, programme_code: str, policy: Policy, effective_from: datetime, operator: str
) -> PolicyView:
    """Append a policy version from ``effective_from`` (not in the past: history keeps the
    rules it ran under). The same version again is a replay."""
    programme = programme_row(act.conn, programme_code, lock=True)
    authorize(act.conn, programme.id, operator, "administrator", region_admin=True)
    same = act.conn.execute(
        select(policies).where(
            policies.c.programme_id == programme.id,
            policies.c.effective_from == effective_from,
        )
    ).first()
    if same is not None:
        if Policy(**same.body) != policy:
            raise errors.ExistsError("policy version", same.version, ["policy"])
        return _policy_view(programme_code, same)
    if effective_from < act.now:
        raise errors.PolicyViolationError(
            f"a policy change takes effect now or later, not at {effective_from.isoformat()}"
        )
    latest = act.conn.execute(
        select(policies.c.version, policies.c.effective_from)
        .where(policies.c.programme_id == programme.id)
        .order_by(policies.c.version.desc())
        .limit(1)
    ).one()
    if effective_from < latest.effective_from:
        raise errors.PolicyViolationError(
            f"version {latest.version} already takes effect at "
            f"{latest.effective_from.isoformat()}; a new version must come after it"
        )
    insert_policy(
        act.conn, programme.id, latest.version + 1, effective_from, policy, operator, act.now
    )
    row = act.conn.execute(
        select(policies).where(
            policies.c.programme_id == programme.id, policies.c.version == latest.version + 1
        )
    ).one()
    return _policy_view(programme_code, row)


def _policy_view(programme_code: str, row: Row[Any]) -> PolicyView:
    return PolicyView(
        programme=programme_code,
        version=row.version,
        effective_from=row.effective_from,
        policy=Policy(**row.body),
        set_by=row.set_by,
    )


# --- regions and sites -----------------------------------------------------------------------


def insert_region(
    act: Act, programme_id: int, programme_code: str, spec: dict[str, str], parent: Row[Any] | None
) -> int:
    if parent is not None and LEVELS.index(spec["level"]) <= LEVELS.index(parent.level):
        raise errors.InvalidInputError(
            f"a {spec['level']} cannot be under a {parent.level}: levels go "
            "province > city > county > township"
        )
    # Levels only go down, so the tree is never deeper than the four levels.
    depth = 0 if parent is None else parent.path.count("/") - 1
    if depth >= REGION_DEPTH_MAX:
        raise errors.PolicyViolationError(f"the region tree is at most {REGION_DEPTH_MAX} deep")
    pool = open_system_account(act, f"{programme_code}:{spec['code']}:pool", "region_pool", floor=0)
    region_id: int = act.conn.execute(
        insert(regions)
        .values(
            programme_id=programme_id,
            code=spec["code"],
            name=spec["name"],
            level=spec["level"],
            parent_id=None if parent is None else parent.id,
            path="",
            pool_account_id=pool,
        )
        .returning(regions.c.id)
    ).scalar_one()
    path = f"{'/' if parent is None else parent.path}{region_id}/"
    act.conn.execute(regions.update().where(regions.c.id == region_id).values(path=path))
    return region_id


def region_row(conn: Connection, programme_id: int, code: str) -> Row[Any]:
    query = select(regions).where(regions.c.programme_id == programme_id, regions.c.code == code)
    return one(conn, query, "region", code)


def add_region(
    act: Act, programme_code: str, spec: dict[str, str], parent_code: str, operator: str
) -> None:
    programme = programme_row(act.conn, programme_code)
    parent = region_row(act.conn, programme.id, parent_code)
    authorize(act.conn, programme.id, operator, "administrator", region=parent, region_admin=True)
    existing = act.conn.execute(
        select(regions).where(
            regions.c.programme_id == programme.id, regions.c.code == spec["code"]
        )
    ).first()
    if existing is not None:
        stored = {"name": existing.name, "level": existing.level, "parent": existing.parent_id}
        fields = differences(stored, {**_named(spec), "parent": parent.id})
        if fields:
            raise errors.ExistsError("region", spec["code"], fields)
        return
    insert_region(act, programme.id, programme_code, spec, parent)


def _named(spec: dict[str, str]) -> dict[str, str]:
    return {"name": spec["name"], "level": spec["level"]}


def site_row(conn: Connection, programme_id: int, code: str) -> Row[Any]:
    query = select(sites).where(sites.c.programme_id == programme_id, sites.c.code == code)
    return one(conn, query, "site", code)


def add_site(  # noqa: PLR0917 - the columns of one row
    act: Act,
    programme_code: str,
    code: str,
    name: str,
    kind: str,
    region_code: str,
    operator: str,
) -> None:
    programme = programme_row(act.conn, programme_code)
    region = region_row(act.conn, programme.id, region_code)
    authorize(act.conn, programme.id, operator, "administrator", region=region, region_admin=True)
    existing = act.conn.execute(
        select(sites).where(sites.c.programme_id == programme.id, sites.c.code == code)
    ).first()
    if existing is not None:
        stored = {"name": existing.name, "kind": existing.kind, "region": existing.region_id}
        fields = differences(stored, {"name": name, "kind": kind, "region": region.id})
        if fields:
            raise errors.ExistsError("site", code, fields)
        return
    prefix = f"{programme_code}:{code}"
    issued = (
        None
        if kind == "institution"
        else open_system_account(act, f"{prefix}:issued", "station_issued", floor=None)
    )
    redeemed = open_system_account(act, f"{prefix}:redeemed", "site_redeemed", floor=None)
    act.conn.execute(
        insert(sites).values(
            programme_id=programme.id,
            code=code,
            name=name,
            kind=kind,
            region_id=region.id,
            issued_account_id=issued,
            redeemed_account_id=redeemed,
        )
    )


# --- operators and permissions ---------------------------------------------------------------


def insert_operator(
    act: Act,
    programme_id: int,
    spec: dict[str, str],
    roles: tuple[str, ...],
    *,
    site_id: int | None,
    region_id: int | None,
) -> None:
    operator_id = act.conn.execute(
        insert(operators)
        .values(
            programme_id=programme_id,
            code=spec["code"],
            name=spec["name"],
            site_id=site_id,
            region_id=region_id,
            created_at=act.now,
        )
        .returning(operators.c.id)
    ).scalar_one()
    act.conn.execute(
        insert(operator_roles), [{"operator_id": operator_id, "role": r} for r in sorted(roles)]
    )


@dataclass(frozen=True, slots=True)
class Actor:
    """An operator as the permission check sees it."""

    id: int
    code: str
    site_id: int | None
    region_path: str | None
    roles: frozenset[str]


def actor(conn: Connection, programme_id: int, code: str) -> Actor:
    row = one(
        conn,
        select(operators.c.id, operators.c.site_id, regions.c.path)
        .select_from(operators.outerjoin(regions, regions.c.id == operators.c.region_id))
        .where(operators.c.programme_id == programme_id, operators.c.code == code),
        "operator",
        code,
    )
    roles = conn.execute(
        select(operator_roles.c.role).where(operator_roles.c.operator_id == row.id)
    ).scalars()
    return Actor(row.id, code, row.site_id, row.path, frozenset(roles))


def authorize(
    conn: Connection,
    programme_id: int,
    operator: str,
    role: Role,
    *,
    site: Row[Any] | None = None,
    region: Row[Any] | None = None,
    region_admin: bool = False,
) -> Actor:
    """Refuse unless ``operator`` may act with ``role`` at ``site`` (or in ``region``).

    An operator of a site acts at that site only, with its own roles. An operator of a
    region acts at every site and region under it, with its own roles; its administrators
    act there with every role. Acts that need ``region_admin`` (structure, policy,
    reversals, freezes) take an administrator of a region at or above the target. An
    auditor never writes, whatever other roles it holds.
    """
    who = actor(conn, programme_id, operator)
    permit(
        who,
        role,
        _target_path(conn, programme_id, site, region),
        site=site,
        region=region,
        region_admin=region_admin,
    )
    return who


def permit(
    who: Actor,
    role: Role,
    target_path: str,
    *,
    site: Row[Any] | None = None,
    region: Row[Any] | None = None,
    region_admin: bool = False,
) -> None:
    """:func:`authorize`'s decision, once the actor and the target's region path are known
    (the bulk import reads them once per batch)."""
    operator = who.code
    if "auditor" in who.roles:
        raise errors.PermissionDeniedError(
            f"operator {operator!r} is an auditor: auditors never write"
        )
    in_scope = (who.region_path is not None and target_path.startswith(who.region_path)) or (
        site is not None and who.site_id == site.id
    )
    if region_admin:
        allowed = who.region_path is not None and in_scope and "administrator" in who.roles
    else:
        allowed = in_scope and (
            role in who.roles or ("administrator" in who.roles and who.region_path is not None)
        )
    if not allowed:
        where = f"site {site.code!r}" if site is not None else f"region {_code(region)!r}"
        raise errors.PermissionDeniedError(
            f"operator {operator!r} may not act as {role} at {where}"
        )


def _target_path(
    conn: Connection, programme_id: int, site: Row[Any] | None, region: Row[Any] | None
) -> str:
    if region is not None:
        return str(region.path)
    if site is not None:
        return str(
            conn.execute(select(regions.c.path).where(regions.c.id == site.region_id)).scalar_one()
        )
    # Programme-wide acts (policy) target the root region.
    return str(
        conn.execute(
            select(regions.c.path).where(
                regions.c.programme_id == programme_id, regions.c.parent_id.is_(None)
            )
        ).scalar_one()
    )


def _code(region: Row[Any] | None) -> str:
    return "(programme)" if region is None else str(region.code)


def add_operator(
    act: Act,
    programme_code: str,
    spec: dict[str, str],
    roles: tuple[str, ...],
    *,
    site_code: str | None,
    region_code: str | None,
    by: str,
) -> None:
    programme = programme_row(act.conn, programme_code)
    if (site_code is None) == (region_code is None):
        raise errors.InvalidInputError("an operator belongs to exactly one site or one region")
    site = None if site_code is None else site_row(act.conn, programme.id, site_code)
    region = None if region_code is None else region_row(act.conn, programme.id, region_code)
    if site is not None:
        authorize(act.conn, programme.id, by, "administrator", site=site, region_admin=True)
    else:
        authorize(act.conn, programme.id, by, "administrator", region=region, region_admin=True)
    existing = act.conn.execute(
        select(operators).where(
            operators.c.programme_id == programme.id, operators.c.code == spec["code"]
        )
    ).first()
    wanted = {
        "name": spec["name"],
        "site": None if site is None else site.id,
        "region": None if region is None else region.id,
        "roles": tuple(sorted(roles)),
    }
    if existing is not None:
        stored_roles = act.conn.execute(
            select(operator_roles.c.role)
            .where(operator_roles.c.operator_id == existing.id)
            .order_by(operator_roles.c.role)
        ).scalars()
        stored = {
            "name": existing.name,
            "site": existing.site_id,
            "region": existing.region_id,
            "roles": tuple(stored_roles),
        }
        fields = differences(stored, wanted)
        if fields:
            raise errors.ExistsError("operator", spec["code"], fields)
        return
    insert_operator(
        act,
        programme.id,
        spec,
        tuple(sorted(roles)),
        site_id=None if site is None else site.id,
        region_id=None if region is None else region.id,
    )
