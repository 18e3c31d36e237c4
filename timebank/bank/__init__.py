"""The time bank on the ledger core: programmes and their policy, regions, stations and
institutions, members, operators and permissions, services and lots; redemption,
bookings, gifts, region pools (donations, grants, estates), the storage cap, expiry, the
guarantee exposure, clearing between stations and regions, and exchange with independent
programmes by signed vouchers.

Every business act is one database transaction made of balanced entries of the core; every
refusal is a typed error of :mod:`timebank.errors` and changes nothing.
"""

from __future__ import annotations

from timebank.bank.api import TimeBank
from timebank.bank.models import (
    BookingView,
    ClearingFlow,
    ClearingPosition,
    ClearingReport,
    ExposureView,
    GiftView,
    GrantCandidate,
    GrantRule,
    InFlightVoucher,
    LotView,
    MemberView,
    OperatorView,
    PartnerStatement,
    PartnerView,
    PersonalData,
    Policy,
    PolicyView,
    PoolMoveView,
    ProgrammeView,
    Reconciliation,
    RedemptionView,
    RegionView,
    ServiceType,
    ServiceView,
    SettlementView,
    SiteView,
    StatementVoucher,
    UnitRate,
    VoucherView,
    credited_minutes,
)

__all__ = [
    "BookingView",
    "ClearingFlow",
    "ClearingPosition",
    "ClearingReport",
    "ExposureView",
    "GiftView",
    "GrantCandidate",
    "GrantRule",
    "InFlightVoucher",
    "LotView",
    "MemberView",
    "OperatorView",
    "PartnerStatement",
    "PartnerView",
    "PersonalData",
    "Policy",
    "PolicyView",
    "PoolMoveView",
    "ProgrammeView",
    "Reconciliation",
    "RedemptionView",
    "RegionView",
    "ServiceType",
    "ServiceView",
    "SettlementView",
    "SiteView",
    "StatementVoucher",
    "TimeBank",
    "UnitRate",
    "VoucherView",
    "credited_minutes",
]
