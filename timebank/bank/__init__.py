"""The time bank on the ledger core: programmes and their policy, regions, stations and
institutions, members, operators and permissions, services and lots.

Every business act is one database transaction made of balanced entries of the core; every
refusal is a typed error of :mod:`timebank.errors` and changes nothing.
"""

from __future__ import annotations

from timebank.bank.api import TimeBank
from timebank.bank.models import (
    GiftView,
    LotView,
    MemberView,
    OperatorView,
    PersonalData,
    Policy,
    PolicyView,
    ProgrammeView,
    RedemptionView,
    RegionView,
    ServiceType,
    ServiceView,
    SiteView,
    credited_minutes,
)

__all__ = [
    "GiftView",
    "LotView",
    "MemberView",
    "OperatorView",
    "PersonalData",
    "Policy",
    "PolicyView",
    "ProgrammeView",
    "RedemptionView",
    "RegionView",
    "ServiceType",
    "ServiceView",
    "SiteView",
    "TimeBank",
    "credited_minutes",
]
