"""Policy presets modelled on real time-bank schemes: Nanjing, Beijing, Zeitvorsorge St. Gallen.

Each function returns a :class:`timebank.bank.Policy` for a catalogue of service types you
pass (or a small default one). The comments quote the rules as the project's domain notes
(DOMAIN.md, "How real schemes work") state them; where no scheme states a value (expiry
periods, yearly gift limits, inheritance...), the preset keeps the library's safe default and
says so. They are starting points for a programme's administrator, not legal advice: check
the scheme's current regulations.

Import them from an example (``from presets import nanjing``), or run
``python examples/presets.py`` to print them as one JSON object. A database URL given as the
first argument (the example tests pass one) is ignored: presets are plain values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import timebank
from timebank.bank.models import GrantRule

#: A neutral catalogue: a minute served is a minute deposited. Only Fureai Kippu (Japan)
#: weights services (body care 2 credits an hour, shopping 1); none of the three schemes
#: below states weights, so the default catalogue does not invent any. Pass your own.
DEFAULT_SERVICE_TYPES: dict[str, timebank.ServiceType] = {
    "body_care": timebank.ServiceType(name="Body care", weight_permille=1000),
    "company": timebank.ServiceType(name="Keeping company", weight_permille=1000),
    "errands": timebank.ServiceType(name="Shopping and errands", weight_permille=1000),
    "day_care": timebank.ServiceType(name="Day care at an institution", weight_permille=1000),
}

Catalogue = Mapping[str, timebank.ServiceType] | None


def _catalogue(service_types: Catalogue) -> dict[str, timebank.ServiceType]:
    return dict(DEFAULT_SERVICE_TYPES if service_types is None else service_types)


def nanjing(service_types: Catalogue = None) -> timebank.Policy:
    """Nanjing (2019): a capped account whose excess is donated, groups that only donate, and
    a public fund that issues time to priority elders."""
    return timebank.Policy(
        service_types=_catalogue(service_types),
        timezone="Asia/Shanghai",
        # "Storage cap 1,500 h per person, excess goes to donation": 1,500 h = 90,000 minutes;
        # a deposit over it is split, the excess going to the pool of the region of the
        # volunteer's home station (the service is confirmed, nothing stays pending).
        storage_cap_minutes=1_500 * 60,
        cap_excess="pool",
        # "Hours of volunteer groups can only be donated": a group neither redeems, books
        # nor gives; it donates.
        groups_donate_only=True,
        # "A public fund issues time to priority elders (80+ living alone, poor disabled
        # 60-79)". Rules are tried in order; the first one a member matches is their
        # priority. A rule has no upper age: a poor disabled elder of 85 who does not live
        # alone still matches the second rule, which is the charitable reading of "60-79"
        # (the 80+ rule was meant to widen the circle, not to shut them out).
        grant_rules=(
            GrantRule(min_age=80, attributes=frozenset({"living_alone"})),
            GrantRule(min_age=60, attributes=frozenset({"disabled", "low_income"})),
        ),
        # Not stated by Nanjing, library defaults kept: redemption from 60 or with an
        # assessed need; gifts to direct relatives without a yearly limit; lots never
        # expire (None is the safe default: nobody loses minutes they earned); estates to
        # the designated beneficiary. City-wide deposit-anywhere/redeem-anywhere (通存通兑)
        # needs no setting: any institution of the programme redeems any member's minutes.
        # Star levels by hours served are a report over services, not a policy field.
    )


def beijing(service_types: Catalogue = None) -> timebank.Policy:
    """Beijing (2022): the volunteer or their spouse redeems once 60+ and in need; gifts to
    direct relatives only; donations to the platform."""
    return timebank.Policy(
        service_types=_catalogue(service_types),
        timezone="Asia/Shanghai",
        # "The volunteer or spouse, once 60+ and in need, redeems": both conditions, checked
        # by the library on the recipient (the age from the birth date, the need from the
        # administrator's assessment, set_assessed_need).
        redemption_min_age=60,
        need_redeems=True,
        redemption_rule="age_and_need",
        spouse_redeems=True,
        # "Gifts only to direct relatives": what the receiver is to the giver.
        gift_relations=frozenset({"spouse", "parent", "child"}),
        # "Donation to the platform": donate() to a region pool, always allowed. Whom the
        # platform grants to is not stated: the library's default grant rule (80+) is kept.
        # Not expressible here: "residents 18+" is checked at registration by the station
        # (Policy has no minimum registration age); "hours never convert to money or
        # goods" holds by construction (nothing in timebank pays out cash); "10,000 h earns
        # a public care-home place" is a report over services served, not a setting.
        # Not stated, defaults kept: no storage cap (a cap would have to exceed 10,000 h
        # anyway), lots never expire, no yearly gift limit, estates to the beneficiary.
    )


def zeitvorsorge(service_types: Catalogue = None) -> timebank.Policy:
    """Zeitvorsorge St. Gallen: a 750 h cap, couple accounts, a social fund for hardship,
    and a city that guarantees redemption (no cash payout)."""
    return timebank.Policy(
        service_types=_catalogue(service_types),
        timezone="Europe/Zurich",
        # "750 h cap": 45,000 minutes. cap_excess="refuse", not "pool": the scheme states no
        # donation of the excess (that is Nanjing's rule), and diverting a volunteer's
        # minutes to a pool would be a donation they never made. Refused, the service stays
        # pending, nothing is lost: once the volunteer redeems or gives some minutes, it can
        # be confirmed. The cap also bounds what the city guarantees per person, and pooled
        # minutes would count against the guarantee just the same (guarantee_exposure).
        storage_cap_minutes=750 * 60,
        cap_excess="refuse",
        # "Couple accounts": the library keeps one account per member, so a couple is two
        # accounts whose minutes may pay for either partner's care (spouse_redeems) and may
        # be given between the partners (a spouse is a direct relative).
        spouse_redeems=True,
        # "A social fund account for hardship": the region pool, granting to members an
        # administrator assessed in need (set_assessed_need), at any age.
        grant_rules=(GrantRule(assessed_need=True),),
        # "The city guarantees redemption (no cash payout)": guarantee_exposure() is the
        # figure the city stands behind; nothing in timebank pays out cash.
        # Not stated, defaults kept: redemption from 60 or with an assessed need; gifts to
        # direct relatives without a yearly limit; lots never expire; estates to the
        # beneficiary.
    )


PRESETS = {"nanjing": nanjing, "beijing": beijing, "zeitvorsorge": zeitvorsorge}


def _plain(value: Any) -> Any:
    """JSON-ready, with sets sorted so the output is the same on every run."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(item) for item in value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def main() -> None:
    """Print one JSON object, preset name -> policy (pipe it to ``jq``)."""
    shown = {}
    for name, preset in PRESETS.items():
        policy = preset()
        # The library stores a policy as JSON and reads it back: the preset must survive.
        assert timebank.Policy(**policy.model_dump(mode="json")) == policy, name
        shown[name] = _plain(policy.model_dump())
    print(json.dumps(shown, indent=2, ensure_ascii=False))
    assert nanjing().storage_cap_minutes == 90_000
    assert zeitvorsorge().storage_cap_minutes == 45_000


if __name__ == "__main__":
    main()
