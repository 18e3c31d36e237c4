"""Named bounds of the time-bank layer."""

from __future__ import annotations

from typing import Final

#: Codes of programmes, regions, sites and service types (short enough that the ledger
#: account codes built from them fit: "<programme>:<site>:redeemed").
CODE_LENGTH_MAX: Final = 24
NAME_LENGTH_MAX: Final = 120
NOTE_LENGTH_MAX: Final = 500
PHONE_LENGTH_MAX: Final = 32
#: External identities (a national ID number, a registration number) before hashing.
IDENTITY_LENGTH_MAX: Final = 64
#: Recipients of one service.
RECIPIENTS_PER_SERVICE_MAX: Final = 20
#: Service types in one programme's catalogue.
SERVICE_TYPES_MAX: Final = 200
#: Longest service any policy may allow: one day.
SERVICE_MINUTES_MAX: Final = 24 * 60
#: Services one ``confirm_due`` call confirms.
SERVICES_PER_SWEEP_MAX: Final = 1_000
#: Depth of the region tree (province > city > county > township).
REGION_DEPTH_MAX: Final = 4
#: Weights are stored in thousandths: 1000 is 1 credited minute per minute served.
WEIGHT_PERMILLE_MAX: Final = 10_000
#: Keys of redemptions: short enough that the entry's key ("redemption:" + key) fits.
REDEMPTION_KEY_LENGTH_MAX: Final = 112
#: Members one ``register_members`` call registers (one transaction).
MEMBERS_PER_CALL_MAX: Final = 10_000
