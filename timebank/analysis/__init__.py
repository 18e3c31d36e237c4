"""DataFrames and plots of a timebank database, for notebooks and reports.

Needs the ``analysis`` extra (pandas and matplotlib): ``pip install 'timebank[analysis]'``.
The rest of timebank never imports them.

Every function takes a ``source``, a :class:`~timebank.TimeBank`, a
:class:`~timebank.Ledger` or an SQLAlchemy ``Engine``, and only reads:

- the ledger: :func:`entries`, :func:`postings` (with account code and type, and the
  member whose account it is), :func:`balances` (every account as recorded at an
  instant), :func:`balance_history` (one account's running balance);
- the time bank: :func:`members` (without identity data: no name, phone, identity hash
  or birth date), :func:`services`, :func:`lots`, and :func:`monthly_station_summary`
  (per site and month: services confirmed, minutes deposited and redeemed, volunteers);
- plots, in :mod:`timebank.analysis.plots`, each a matplotlib ``Figure``.

Each frame has the columns and dtypes of its ``*_COLUMNS`` mapping, whatever the
database. Large tables are read in chunks of ``chunk_rows`` rows streamed from the
database: :func:`iter_postings` and :func:`iter_entries` yield them one DataFrame at a time
(bounded memory), and the whole-frame functions are built on the same chunked reads.
"""

from __future__ import annotations

# First: without pandas or matplotlib, it names the extra to install.
import timebank.analysis._extra  # noqa: F401
from timebank.analysis import plots
from timebank.analysis._frames import (
    AGE_BAND_YEARS,
    BALANCE_COLUMNS,
    CHUNK_ROWS,
    CHUNK_ROWS_MAX,
    ENTRY_COLUMNS,
    HISTORY_COLUMNS,
    LOT_COLUMNS,
    MEMBER_COLUMNS,
    POSTING_COLUMNS,
    SERVICE_COLUMNS,
    SUMMARY_COLUMNS,
    Source,
    age_band,
    balance_history,
    balances,
    entries,
    iter_entries,
    iter_postings,
    lots,
    members,
    monthly_station_summary,
    postings,
    services,
)

__all__ = [
    "AGE_BAND_YEARS",
    "BALANCE_COLUMNS",
    "CHUNK_ROWS",
    "CHUNK_ROWS_MAX",
    "ENTRY_COLUMNS",
    "HISTORY_COLUMNS",
    "LOT_COLUMNS",
    "MEMBER_COLUMNS",
    "POSTING_COLUMNS",
    "SERVICE_COLUMNS",
    "SUMMARY_COLUMNS",
    "Source",
    "age_band",
    "balance_history",
    "balances",
    "entries",
    "iter_entries",
    "iter_postings",
    "lots",
    "members",
    "monthly_station_summary",
    "plots",
    "postings",
    "services",
]
