"""The time bank on the ledger core: programmes and their policy, regions, stations and
institutions, members, operators and permissions, services and lots; redemption,
bookings, gifts, region pools (donations, grants, estates), the storage cap, expiry and
the guarantee exposure.

Every business act is one database transaction made of balanced entries of the core; every
refusal is a typed error of :mod:`timebank.errors` and changes nothing.
"""

from __future__ import annotations

from timebank.bank.api import TimeBank
from timebank.bank.models import (
    BookingView,
    ExposureView,
    GiftView,
    GrantCandidate,
    GrantRule,
    LotView,
    MemberView,
    OperatorView,
    PersonalData,
    Policy,
    PolicyView,
    PoolMoveView,
    ProgrammeView,
    RedemptionView,
    RegionView,
    ServiceType,
    ServiceView,
    SiteView,
    credited_minutes,
)

__all__ = [
    "BookingView",
    "ExposureView",
    "GiftView",
    "GrantCandidate",
    "GrantRule",
    "LotView",
    "MemberView",
    "OperatorView",
    "PersonalData",
    "Policy",
    "PolicyView",
    "PoolMoveView",
    "ProgrammeView",
    "RedemptionView",
    "RegionView",
    "ServiceType",
    "ServiceView",
    "SiteView",
    "TimeBank",
    "credited_minutes",
]
