"""Named bounds on everything that can grow (as TigerBeetle: every input has a limit)."""

from __future__ import annotations

from typing import Final

#: Largest absolute amount of one posting or hold: about 1,900 years of service.
AMOUNT_MAX_MINUTES: Final = 1_000_000_000
#: Postings of one entry (at least 2, distinct accounts).
POSTINGS_PER_ENTRY_MAX: Final = 32
#: Entries one ``post_many`` call writes in a single database transaction.
ENTRIES_PER_BATCH_MAX: Final = 10_000
#: Accounts one ``open_accounts`` call creates.
ACCOUNTS_PER_BATCH_MAX: Final = 100_000
#: Holds one ``expire_holds`` call may expire.
HOLDS_PER_SWEEP_MAX: Final = 10_000
#: Lines in one statement page.
PAGE_SIZE_MAX: Final = 1_000
#: Attempts of one operation on serialization failure, deadlock or a lost idempotency race.
ATTEMPTS_MAX: Final = 6
#: Text bounds, shared by the schema and the command models.
KEY_LENGTH_MAX: Final = 128
ACCOUNT_CODE_LENGTH_MAX: Final = 64
ACCOUNT_TYPE_LENGTH_MAX: Final = 32
ENTRY_CODE_LENGTH_MAX: Final = 32
OWNER_REF_LENGTH_MAX: Final = 128
OPERATOR_LENGTH_MAX: Final = 64
MEMO_LENGTH_MAX: Final = 500
#: Serialized size of an entry's or hold's metadata.
METADATA_BYTES_MAX: Final = 4_096
#: Rows per SQL statement when the library chunks IN lists and multi-row writes.
SQL_CHUNK_ROWS: Final = 1_000
