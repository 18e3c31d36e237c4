"""Set-up: programmes and their policies, regions, sites, operators and members."""

from __future__ import annotations

from datetime import date, datetime
from typing import cast, get_args

import click
from pydantic import ValidationError

from timebank import errors
from timebank.bank import Policy
from timebank.bank.models import (
    ActsAs,
    MemberKind,
    MemberStatus,
    RegionLevel,
    RelationKind,
    Role,
    Sex,
    SiteKind,
)
from timebank.cli._app import common
from timebank.cli._output import emit
from timebank.cli._params import (
    DAY,
    ID,
    MOMENT,
    local,
    operator_option,
    programme_option,
    read_document,
    read_hidden,
)
from timebank.cli._root import root
from timebank.cli._state import STATE

REGION_LEVELS = get_args(RegionLevel)
SITE_KINDS = get_args(SiteKind)
ROLES = get_args(Role)
RELATIONS = get_args(RelationKind)
STATUSES = get_args(MemberStatus)


def load_policy(path: str) -> Policy:
    """The policy in a JSON or TOML file, validated by the Policy model."""
    try:
        return Policy.model_validate(read_document(path))
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg']}"
            for e in error.errors()
        )
        raise errors.InvalidInputError(f"{path}: {problems}") from None


# --- programmes and policies -------------------------------------------------------------


@root.group()
def programme() -> None:
    """Create a programme (one time bank: its region tree, policy and administrator)."""


@programme.command("create")
@common()
@click.argument("code")
@click.option("--name", required=True, help="The programme's name.")
@click.option("--policy", "policy_file", required=True, metavar="FILE",
              help="The policy, a JSON or TOML file (see `timebank policy show`).")
@click.option("--root-region", required=True, help="Code of the root region.")
@click.option("--root-region-name", required=True)
@click.option("--root-level", type=click.Choice(REGION_LEVELS), default="province",
              show_default=True)
@click.option("--administrator", required=True, help="Code of the first administrator.")
@click.option("--administrator-name", required=True)
def programme_create(
    *, code: str, name: str, policy_file: str, root_region: str,
                     root_region_name: str, root_level: str, administrator: str,
                     administrator_name: str) -> None:
    """Create programme CODE with its root region, policy and first administrator. The same
    definition again changes nothing; another definition is a conflict.

    \b
    Example:
      timebank programme create nj --name "Nanjing time bank" --policy policy.toml \\
          --root-region js --root-region-name "Jiangsu" --administrator admin \\
          --administrator-name "Wang Fang"
    """
    policy = load_policy(policy_file)
    bank = STATE.bank()
    view = bank.create_programme(
        code, name, policy=policy, root_region=root_region, root_region_name=root_region_name,
        root_level=cast(RegionLevel, root_level),
        administrator=administrator, administrator_name=administrator_name,
    )
    emit(view, title=f"programme {code}")


@programme.command("show")
@common()
@click.argument("code")
def programme_show(code: str) -> None:
    """Show programme CODE."""
    emit(STATE.bank().programme(code), title=f"programme {code}")


@root.group()
def policy() -> None:
    """Show a programme's policy, or put a new version in force."""


@policy.command("show")
@common()
@programme_option
@click.option("--at", type=MOMENT, help="The version in force then [default: now].")
def policy_show(programme: str, at: datetime | None) -> None:
    """Show the policy in force (the JSON that `policy set` and `programme create` read).

    \b
    Example:
      timebank policy show -p nj --json > policy.json
    """
    bank = STATE.bank()
    view = bank.policy(programme, at=local(bank, programme, at))
    if STATE.json:
        emit(view)
    else:
        emit(view.policy, title=f"{programme} policy, version {view.version} from "
             f"{view.effective_from.isoformat()} (set by {view.set_by})")


@policy.command("set")
@common()
@programme_option
@operator_option
@click.option("--file", "policy_file", required=True, metavar="FILE",
              help="The new policy, a JSON or TOML file.")
@click.option("--effective-from", type=MOMENT, required=True,
              help="When it comes into force (now or later).")
def policy_set(programme: str, operator: str, policy_file: str,
               effective_from: datetime) -> None:
    """Put a new policy version in force from --effective-from (administrators of the root).

    \b
    Example:
      timebank policy set -p nj -o admin --file policy-2027.toml \\
          --effective-from 2027-01-01T00:00
    """
    new = load_policy(policy_file)
    bank = STATE.bank()
    start = local(bank, programme, effective_from)
    assert start is not None
    emit(bank.set_policy(programme, new, effective_from=start, operator=operator),
         title=f"{programme} policy")


# --- regions, sites, operators -------------------------------------------------------------


@root.group()
def region() -> None:
    """Add regions under the programme's root (city, county, township)."""


@region.command("add")
@common()
@programme_option
@operator_option
@click.argument("code")
@click.option("--name", required=True)
@click.option("--level", type=click.Choice(REGION_LEVELS), required=True)
@click.option("--parent", required=True, help="The parent region's code.")
def region_add(
    *, programme: str, operator: str, code: str, name: str, level: str,
               parent: str) -> None:
    """Add region CODE under --parent (administrators above it).

    \b
    Example:
      timebank region add -p nj -o admin gulou --name "Gulou" --level county --parent nj-city
    """
    view = STATE.bank().add_region(
        programme, code, name, level=cast(RegionLevel, level),
        parent=parent, operator=operator,
    )
    emit(view, title=f"region {code}")


@region.command("show")
@common()
@programme_option
@click.argument("code")
def region_show(programme: str, code: str) -> None:
    """Show region CODE."""
    emit(STATE.bank().region(programme, code), title=f"region {code}")


@root.group()
def site() -> None:
    """Add stations and institutions, list and show them."""


@site.command("add")
@common()
@programme_option
@operator_option
@click.argument("code")
@click.option("--name", required=True)
@click.option("--kind", type=click.Choice(SITE_KINDS), default="community_station",
              show_default=True)
@click.option("--region", "region_code", required=True, help="The region it belongs to.")
def site_add(
    *, programme: str, operator: str, code: str, name: str, kind: str,
             region_code: str) -> None:
    """Add site CODE (a station, or an institution) in --region; its ledger accounts open with it.

    \b
    Example:
      timebank site add -p nj -o admin st-hunan --name "Hunan Road" --region gulou
    """
    view = STATE.bank().add_site(
        programme, code, name, kind=cast(SiteKind, kind),
        region=region_code, operator=operator,
    )
    emit(view, title=f"site {code}")


@site.command("show")
@common()
@programme_option
@click.argument("code")
def site_show(programme: str, code: str) -> None:
    """Show site CODE."""
    emit(STATE.bank().site(programme, code), title=f"site {code}")


@site.command("list")
@common()
@programme_option
def site_list(programme: str) -> None:
    """List the programme's stations and institutions."""
    emit(STATE.bank().sites(programme), title=f"{programme} sites")


@root.group("operator")
def operator_group() -> None:
    """Add staff (administrators, recorders, confirmers, auditors) and show them."""


@operator_group.command("add")
@common()
@programme_option
@click.argument("code")
@click.option("--name", required=True)
@click.option("--role", "roles", type=click.Choice(ROLES), multiple=True, required=True,
              help="A role (repeat for several).")
@click.option("--site", "site_code", help="The station they work at...")
@click.option("--region", "region_code", help="...or the region they act for.")
@click.option("--by", required=True, envvar="TIMEBANK_OPERATOR", show_envvar=True,
              help="The administrator adding them.")
def operator_add(
    *, programme: str, code: str, name: str, roles: tuple[str, ...],
                 site_code: str | None, region_code: str | None, by: str) -> None:
    """Add operator CODE at one --site or for one --region (administrators above it).

    \b
    Example:
      timebank operator add -p nj desk1 --name "Li Na" --role recorder --role confirmer \\
          --site st-hunan --by admin
    """
    view = STATE.bank().add_operator(
        programme, code, name, roles=cast(tuple[Role, ...], roles),
        site=site_code, region=region_code, by=by,
    )
    emit(view, title=f"operator {code}")


@operator_group.command("show")
@common()
@programme_option
@click.argument("code")
def operator_show(programme: str, code: str) -> None:
    """Show operator CODE and their roles."""
    emit(STATE.bank().operator(programme, code), title=f"operator {code}")


# --- members -------------------------------------------------------------------------------


@root.group()
def member() -> None:
    """Register members, find them by identity, and keep their record."""


@member.command("register")
@common()
@programme_option
@operator_option
@click.option("--name", "display_name", required=True, help="The name shown to staff.")
@click.option("--birth-date", type=DAY, required=True)
@click.option("--home-site", required=True, help="The station they belong to.")
@click.option("--kind", type=click.Choice(get_args(MemberKind)), default="person",
              show_default=True)
@click.option("--acts-as", type=click.Choice(get_args(ActsAs)),
              default="both", show_default=True)
@click.option("--sex", type=click.Choice(["female", "male"]), help="Optional, for statistics.")
@click.option("--phone", "ask_phone", is_flag=True,
              help="Also ask for a phone number (after the identity, the same way).")
def member_register(
    *, programme: str, operator: str, display_name: str, birth_date: date,
                    home_site: str, kind: str, acts_as: str, sex: str | None,
                    ask_phone: bool) -> None:
    """Register a member. The identity number is asked for without echo (or read as the
    first line of stdin), never taken from the command line, and stored only as a keyed
    hash (the key: TIMEBANK_IDENTITY_SECRET_FILE or TIMEBANK_IDENTITY_SECRET).

    \b
    Example:
      timebank member register -p nj -o desk1 --name "Zhang Wei" \\
          --birth-date 1956-04-02 --home-site st-hunan < identity.txt
    """
    bank = STATE.bank(programme=programme)
    identity = read_hidden("Identity number")
    phone = read_hidden("Phone") if ask_phone else None
    view = bank.register_member(
        programme, identity=identity, display_name=display_name, birth_date=birth_date,
        home_site=home_site, operator=operator,
        kind=cast(MemberKind, kind), acts_as=cast(ActsAs, acts_as), sex=cast(Sex | None, sex),
        phone=phone,
    )
    emit(view, title=f"member {view.id}")


@member.command("find")
@common()
@programme_option
def member_find(programme: str) -> None:
    """Find a member by identity number (asked for without echo, or read from stdin).

    \b
    Example:
      timebank member find -p nj --json < identity.txt
    """
    bank = STATE.bank(programme=programme)
    view = bank.find_member(programme, identity=read_hidden("Identity number"))
    emit(view, title=f"member {view.id}")


@member.command("show")
@common()
@click.argument("member_id", type=ID)
@click.option("--personal", is_flag=True, help="Also show name, birth date, phone, sex.")
def member_show(member_id: int, personal: bool) -> None:
    """Show member MEMBER_ID (balance, status, relations)."""
    bank = STATE.bank()
    view = bank.member(member_id)
    record = view.model_dump(mode="json")
    record["relations"] = {str(k): v for k, v in bank.relations(member_id).items()}
    if personal:
        record["personal"] = bank.personal_data(member_id).model_dump(mode="json")
    emit(record, title=f"member {member_id}")


@member.command("relate")
@common()
@operator_option
@click.argument("member_id", type=ID)
@click.argument("kind", type=click.Choice(RELATIONS))
@click.argument("other_id", type=ID)
def member_relate(operator: str, member_id: int, kind: str, other_id: int) -> None:
    """Record that MEMBER_ID is the KIND of OTHER_ID (and the inverse).

    \b
    Example:
      timebank member relate -o desk1 12 spouse 13
    """
    bank = STATE.bank()
    bank.relate(member_id, other_id, cast(RelationKind, kind), operator=operator)
    emit({"member_id": member_id, "relations": bank.relations(member_id)},
         title=f"member {member_id}")


@member.command("status")
@common()
@operator_option
@click.argument("member_id", type=ID)
@click.argument("status", type=click.Choice(STATUSES))
@click.option("--reason", required=True)
def member_status(operator: str, member_id: int, status: str, reason: str) -> None:
    """Set MEMBER_ID's status: frozen (nothing moves), active, deceased (minutes pass on as
    the policy says) or closed (an empty account only). Administrators.

    \b
    Example:
      timebank member status -o admin 12 deceased --reason "death certificate 2026-118"
    """
    view = STATE.bank().set_member_status(
        member_id, cast(MemberStatus, status), reason=reason, operator=operator
    )
    emit(view, title=f"member {member_id}")


@member.command("erase")
@common()
@operator_option
@click.argument("member_id", type=ID)
@click.option("--reason", required=True, help="The request, e.g. its reference number.")
def member_erase(operator: str, member_id: int, reason: str) -> None:
    """Erase MEMBER_ID's name, phone and identity hash on their request (administrators).
    Balances, lots, entries and the sealed chain stay as they were.

    \b
    Example:
      timebank member erase 12 -o admin --reason "request 2026-113"
    """
    view = STATE.bank().erase_personal_data(member_id, reason=reason, operator=operator)
    emit(view, title=f"member {member_id}")


@member.command("need")
@common()
@operator_option
@click.argument("member_id", type=ID)
@click.option("--in-need/--not-in-need", required=True,
              help="Whether the member is assessed as in need of care.")
def member_need(operator: str, member_id: int, in_need: bool) -> None:
    """Record a member's assessed need of care (administrators)."""
    view = STATE.bank().set_assessed_need(member_id, in_need=in_need, operator=operator)
    emit(view, title=f"member {member_id}")


@member.command("attributes")
@common()
@operator_option
@click.argument("member_id", type=ID)
@click.argument("attributes", nargs=-1)
def member_attributes(operator: str, member_id: int, attributes: tuple[str, ...]) -> None:
    """Replace a member's priority attributes (e.g. living_alone), which grant rules name."""
    view = STATE.bank().set_member_attributes(member_id, attributes, operator=operator)
    emit(view, title=f"member {member_id}")


@member.command("beneficiary")
@common()
@operator_option
@click.argument("member_id", type=ID)
@click.argument("beneficiary_id", type=ID, required=False)
def member_beneficiary(operator: str, member_id: int, beneficiary_id: int | None) -> None:
    """Designate who receives MEMBER_ID's minutes on their death (none given: withdraw)."""
    view = STATE.bank().set_beneficiary(member_id, beneficiary_id, operator=operator)
    emit(view, title=f"member {member_id}")
