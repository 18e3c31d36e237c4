"""Tamper evidence: the journal sealed into a hash chain, and the audit that checks it all.

:func:`seal` puts every entry not yet sealed into blocks. Each entry's hash covers a
canonical, versioned encoding (``ENCODING``) of the entry, its postings, the accounts they
name (by id and type, and a member's account by the member's id: never a name or an
identity hash) and the lot movements it made; a block's hash covers the previous block's
hash and its entries' hashes in entry order. Sealing reads only the entries it seals and
writes one row per entry: posting never waits for it.

:func:`audit` recomputes the chain, every materialised balance (``Ledger.verify``), every
lot's remaining minutes from its uses, every member's and pool's balance against their open
lots, and the zero sum, and says precisely what disagrees: which block, entry or account.
:func:`digest` is the latest seal's hash, small enough for a third party (the region, the
guarantor) to keep; an audit against a kept digest detects any rewrite of sealed history,
even one that recomputed every hash after it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, Row, func, insert, select, text
from sqlalchemy import exc as sa_exc

from timebank import _reads, errors
from timebank.bank._redeem import differing_origins
from timebank.bank.schema import (
    lot_uses,
    lots,
    members,
    pool_lot_uses,
    pool_lots,
    regions,
)
from timebank.ledger import Ledger
from timebank.schema import accounts, entries, postings, sealed_entries, seals

#: The version of the canonical encoding of an entry; a new encoding is a new number, and
#: each block records the one it was sealed with.
ENCODING = 1
#: The "previous hash" of block 1.
GENESIS = "0" * 64
#: At most this many entries go into one block.
ENTRIES_PER_BLOCK = 10_000
#: An entry committed late (its transaction began before a seal and ended after it) has an id
#: below that seal's last one: the next seal looks this far back for such entries (at 1,000
#: entries a second, transactions open for ten seconds).
LATE_WINDOW_IDS = 10_000
#: Unsealed entries recorded this long before the latest seal cannot be late commits: the
#: audit reports them (inserted behind the library's back, or their seal rows deleted).
LATE_GRACE_SECONDS = 15 * 60
#: Tries of one block when other sealers take the same block number first.
SEAL_ATTEMPTS = 10
#: PostgreSQL advisory lock that sealers take turns on ("tbseal" in ASCII).
SEAL_LOCK_KEY = 0x7462_7365_616C
#: Ids per IN (...) list, well under every database's limit on bound parameters.
CHUNK = 1_000
#: Problems listed in a report (the counts are complete).
LISTED_MAX = 100

Kind = Literal["block", "entry", "account", "lot", "holder", "clearing", "ledger", "digest"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class SealView(_Frozen):
    """One sealed block."""

    block: int
    encoding: int
    entries: int
    first_entry_id: int
    last_entry_id: int
    previous_hash: str
    block_hash: str
    sealed_at: datetime


class Digest(_Frozen):
    """What a third party keeps: the latest block and its hash (no personal data)."""

    block: int
    block_hash: str
    entries_sealed: int
    sealed_at: datetime

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> Digest:
        try:
            return cls.model_validate_json(text)
        except ValueError as error:
            raise errors.InvalidInputError(f"not a timebank digest: {error}") from None


class Problem(_Frozen):
    """One disagreement: ``kind`` says what ``ref`` names (a block number, an entry id, an
    account code, a lot id, a member or pool)."""

    kind: Kind
    ref: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} {self.ref}: {self.detail}"


class AuditReport(_Frozen):
    ok: bool
    blocks: int
    entries_sealed: int
    entries_unsealed: int
    entries: int
    postings: int
    trial_balance_total: int
    digest_checked: bool
    problem_count: int
    problems: tuple[Problem, ...]

    def render(self) -> str:
        lines = [
            f"audit: {'ok' if self.ok else f'{self.problem_count} problems'}",
            f"  chain: {self.blocks:,} blocks, {self.entries_sealed:,} entries sealed, "
            f"{self.entries_unsealed:,} not yet sealed",
            f"  journal: {self.entries:,} entries, {self.postings:,} postings, "
            f"trial balance {self.trial_balance_total} (must be 0)",
            f"  kept digest: {'checked' if self.digest_checked else 'none given'}",
        ]
        lines += [f"  ! {problem}" for problem in self.problems]
        if self.problem_count > len(self.problems):
            lines.append(f"  ... and {self.problem_count - len(self.problems)} more")
        return "\n".join(lines)


# --- sealing ---------------------------------------------------------------------------------


def seal(ledger: Ledger, *, entries_per_block: int = ENTRIES_PER_BLOCK) -> list[SealView]:
    """Seal every entry not yet sealed, in blocks of at most ``entries_per_block`` (one
    transaction each); returns the new blocks (none when everything was sealed)."""
    if type(entries_per_block) is not int or not 1 <= entries_per_block <= ENTRIES_PER_BLOCK:
        raise errors.InvalidInputError(f"entries_per_block: 1 to {ENTRIES_PER_BLOCK:,}")
    # What is committed now, and no more: under a steady load there is always another entry,
    # and a sealer must come back rather than chase them.
    newest = ledger._read(lambda conn: conn.execute(select(func.max(entries.c.id))).scalar())
    made: list[SealView] = []
    while newest is not None and (
        block := _seal_once(ledger, entries_per_block, int(newest))
    ) is not None:
        made.append(block)
    return made


def _seal_once(ledger: Ledger, limit: int, newest: int) -> SealView | None:
    for _attempt in range(SEAL_ATTEMPTS):
        try:
            with ledger.transaction() as tx:
                return _seal_block(tx.connection, ledger.clock(), limit, newest)
        except sa_exc.IntegrityError:
            continue  # another sealer took this block number: look again
        except sa_exc.DBAPIError as exc:
            raise errors.StorageError(f"database error while sealing: {exc.orig}") from exc
    raise errors.ConcurrencyError("another process keeps sealing: retry later")


def _seal_block(conn: Connection, now: datetime, limit: int, newest: int) -> SealView | None:
    _one_sealer(conn)
    last = conn.execute(select(seals).order_by(seals.c.id.desc()).limit(1)).first()
    ids = list(
        conn.execute(
            select(entries.c.id)
            .outerjoin(sealed_entries, sealed_entries.c.entry_id == entries.c.id)
            .where(
                entries.c.id > _floor(conn, last),
                entries.c.id <= newest,
                sealed_entries.c.entry_id.is_(None),
            )
            .order_by(entries.c.id)
            .limit(limit)
        ).scalars()
    )
    if not ids:
        return None
    hashes = entry_hashes(conn, ids)
    number = 1 if last is None else int(last.id) + 1
    previous = GENESIS if last is None else str(last.block_hash)
    block_hash = chain_hash(number, previous, (hashes[i] for i in ids))
    values = {
        "id": number, "encoding": ENCODING, "entries": len(ids), "first_entry_id": ids[0],
        "last_entry_id": ids[-1], "previous_hash": previous, "block_hash": block_hash,
        "sealed_at": now,
    }
    conn.execute(insert(seals).values(**values))
    conn.execute(
        insert(sealed_entries),
        [{"entry_id": i, "seal_id": number, "entry_hash": hashes[i]} for i in ids],
    )
    return SealView(block=number, **{k: v for k, v in values.items() if k != "id"})


def _floor(conn: Connection, last: Row[Any] | None) -> int:
    """Entries at or below this id are sealed already. SQLite commits its one writer at a time,
    in id order, so nothing can appear below the last sealed id; elsewhere an entry whose
    transaction was still open when the last block was sealed may have a lower id, so the
    look goes back ``LATE_WINDOW_IDS`` (index probes, not a scan of the journal)."""
    if last is None:
        return 0
    if conn.dialect.name == "sqlite":
        return int(last.last_entry_id)
    return max(0, int(last.last_entry_id) - LATE_WINDOW_IDS)


def _one_sealer(conn: Connection) -> None:
    """Sealers take turns. SQLite's write transaction (BEGIN IMMEDIATE) already admits one;
    PostgreSQL takes a transaction-scoped advisory lock. Elsewhere the latest block is
    locked, then read again in a new statement (which sees what committed meanwhile); a
    sealer that still loses the race meets the block number's primary key and tries again."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SEAL_LOCK_KEY})
    elif dialect != "sqlite":
        conn.execute(select(seals.c.id).order_by(seals.c.id.desc()).limit(1).with_for_update())


def chain_hash(block: int, previous_hash: str, entry_hashes: Iterable[str]) -> str:
    """A block's hash: its number, the previous block's hash, its entries' hashes in order."""
    digest = hashlib.sha256(f"timebank-block-v{ENCODING}\n{block}\n{previous_hash}\n".encode())
    for value in entry_hashes:
        digest.update(value.encode("ascii") + b"\n")
    return digest.hexdigest()


def entry_hashes(conn: Connection, ids: Sequence[int]) -> dict[int, str]:
    """SHA-256 of each entry's canonical encoding (entries that do not exist are left out)."""
    found: dict[int, str] = {}
    for start in range(0, len(ids), CHUNK):
        for entry_id, encoded in _encodings(conn, ids[start : start + CHUNK]):
            found[entry_id] = hashlib.sha256(encoded).hexdigest()
    return found


def _encodings(conn: Connection, ids: Sequence[int]) -> Iterator[tuple[int, bytes]]:
    """Encoding 1: canonical JSON (sorted keys, no spaces, UTF-8) of the entry's fields,
    its postings (account id, type and owner, amount, running balance, recorded time) and
    the lots it created, used or moved. Times are integer microseconds since 1970 (UTC)."""
    rows = conn.execute(select(entries).where(entries.c.id.in_(ids))).mappings().all()
    legs = _group(conn.execute(
        select(postings.c.entry_id, postings.c.account_id, accounts.c.type,
               postings.c.amount_minutes, postings.c.balance_after_minutes,
               postings.c.recorded_at)
        .join(accounts, accounts.c.id == postings.c.account_id)
        .where(postings.c.entry_id.in_(ids))
    ))
    owners = _owners(conn, {int(leg[0]) for group in legs.values() for leg in group})
    made = _group(conn.execute(
        select(lots.c.source_entry_id, lots.c.id, lots.c.member_id, lots.c.minutes,
               lots.c.origin_site_id, lots.c.earned_on, lots.c.expires_on, lots.c.parent_lot_id)
        .where(lots.c.source_entry_id.in_(ids))
    ))
    used = _group(conn.execute(
        select(lot_uses.c.entry_id, lot_uses.c.lot_id, lot_uses.c.minutes)
        .where(lot_uses.c.entry_id.in_(ids))
    ))
    pooled = _group(conn.execute(
        select(pool_lots.c.source_entry_id, pool_lots.c.id, pool_lots.c.region_id,
               pool_lots.c.minutes, pool_lots.c.origin_site_id, pool_lots.c.earned_on)
        .where(pool_lots.c.source_entry_id.in_(ids))
    ))
    pool_used = _group(conn.execute(
        select(pool_lot_uses.c.entry_id, pool_lot_uses.c.pool_lot_id, pool_lot_uses.c.minutes)
        .where(pool_lot_uses.c.entry_id.in_(ids))
    ))
    for row in rows:
        entry_id = int(row["id"])
        document = {
            "v": ENCODING,
            "id": entry_id,
            "key": row["idempotency_key"],
            "code": row["code"],
            "occurred_at": _micros(row["occurred_at"]),
            "recorded_at": _micros(row["recorded_at"]),
            "operator": row["operator"],
            "memo": row["memo"],
            "metadata": row["metadata"],
            "reverses": row["reverses_entry_id"],
            "postings": sorted(
                [account_id, kind, owners.get(account_id), amount, after, _micros(at)]
                for account_id, kind, amount, after, at in legs.get(entry_id, [])
            ),
            "lots": sorted(_plain(lot) for lot in made.get(entry_id, [])),
            "lot_uses": sorted(_plain(use) for use in used.get(entry_id, [])),
            "pool_lots": sorted(_plain(lot) for lot in pooled.get(entry_id, [])),
            "pool_lot_uses": sorted(_plain(use) for use in pool_used.get(entry_id, [])),
        }
        yield entry_id, json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")


def _group(rows: Iterable[Row[Any]]) -> dict[int, list[tuple[Any, ...]]]:
    grouped: dict[int, list[tuple[Any, ...]]] = {}
    for row in rows:
        grouped.setdefault(int(row[0]), []).append(tuple(row[1:]))
    return grouped


def _owners(conn: Connection, account_ids: set[int]) -> dict[int, str]:
    """Who an account belongs to, without personal data: ``member:<id>`` for a member's
    account, ``pool:<region id>`` for a region's pool; other accounts (stations, the
    programme, partners, clearing) carry their code, which names an organisation."""
    found: dict[int, str] = {}
    chosen = sorted(account_ids)
    for start in range(0, len(chosen), CHUNK):
        part = chosen[start : start + CHUNK]
        for account_id, code in conn.execute(
            select(accounts.c.id, accounts.c.code).where(accounts.c.id.in_(part))
        ):
            found[int(account_id)] = f"code:{code}"
        for member_id, account_id in conn.execute(
            select(members.c.id, members.c.account_id).where(members.c.account_id.in_(part))
        ):
            found[int(account_id)] = f"member:{member_id}"
        for region_id, account_id in conn.execute(
            select(regions.c.id, regions.c.pool_account_id)
            .where(regions.c.pool_account_id.in_(part))
        ):
            found[int(account_id)] = f"pool:{region_id}"
    return found


def _plain(values: tuple[Any, ...]) -> list[Any]:
    return [v.isoformat() if isinstance(v, date) else v for v in values]


def _micros(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // _MICRO


_MICRO = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)


# --- the digest and the audit ----------------------------------------------------------------


def digest(ledger: Ledger) -> Digest | None:
    """The latest block's number and hash, to be kept by a third party (None: no seal yet)."""

    def read(conn: Connection) -> Digest | None:
        last = conn.execute(select(seals).order_by(seals.c.id.desc()).limit(1)).first()
        if last is None:
            return None
        sealed = conn.execute(select(func.count()).select_from(sealed_entries)).scalar_one()
        return Digest(block=int(last.id), block_hash=str(last.block_hash),
                      entries_sealed=int(sealed), sealed_at=last.sealed_at)

    return ledger._read(read, snapshot=True)


class _Found:
    """Problems as they are found: all counted, the first ``LISTED_MAX`` kept."""

    def __init__(self) -> None:
        self.count = 0
        self.listed: list[Problem] = []

    def add(self, kind: Kind, ref: object, detail: str) -> None:
        self.count += 1
        if len(self.listed) < LISTED_MAX:
            self.listed.append(Problem(kind=kind, ref=str(ref), detail=detail))


def audit(ledger: Ledger, *, kept: Digest | None = None) -> AuditReport:
    """Check everything, in one snapshot of the database: the chain of sealed blocks (and
    ``kept``, a digest a third party kept), every materialised balance replayed from the
    postings and holds, every lot's remaining minutes from its uses, every member's and
    pool's balance against their open lots, every redemption's clearing rows against its
    lot uses, and the zero sum. Reads the whole journal."""
    return ledger._read(lambda conn: _audit(conn, kept), snapshot=True)


def _audit(conn: Connection, kept: Digest | None) -> AuditReport:
    found = _Found()
    blocks, sealed, last_sealed_at = _check_chain(conn, found)
    unsealed = _check_unsealed(conn, found, last_sealed_at)
    replay = _reads.verify(conn)
    for line in replay.problems:  # "<account code>: ...", "entry <id>: ...", or a sentence
        ref, _, detail = line.partition(": ")
        if ref.startswith("entry "):
            found.add("entry", ref.removeprefix("entry "), detail)
        elif detail:
            found.add("account", ref, detail)
        else:
            found.add("ledger", "journal", line)
    _check_lots(conn, found)
    _check_holders(conn, found)
    _check_redemption_origins(conn, found)
    total = int(conn.execute(
        select(func.coalesce(func.sum(accounts.c.posted_minutes), 0))
    ).scalar_one())
    if total != 0:
        found.add("ledger", "trial balance", f"balances sum to {total}, not 0")
    if sealed + unsealed != replay.entries:
        found.add("ledger", "journal", f"{replay.entries} entries, but {sealed} sealed and "
                  f"{unsealed} not: blocks list entries that do not exist")
    if kept is not None:
        _check_kept(conn, found, kept, sealed)
    return AuditReport(
        ok=found.count == 0, blocks=blocks, entries_sealed=sealed, entries_unsealed=unsealed,
        entries=replay.entries, postings=replay.postings, trial_balance_total=total,
        digest_checked=kept is not None, problem_count=found.count,
        problems=tuple(found.listed),
    )


def _check_chain(conn: Connection, found: _Found) -> tuple[int, int, datetime | None]:
    """Every block in order: its number, its link to the previous block, its entries (each
    recomputed against the hash sealed for it) and its own hash."""
    expected, previous, sealed, last_at = 1, GENESIS, 0, None
    for block in conn.execute(select(seals).order_by(seals.c.id)).all():
        number = int(block.id)
        if number != expected:
            found.add("block", expected, f"missing: the chain jumps to block {number}")
        if block.encoding != ENCODING:
            found.add("block", number, f"sealed with encoding {block.encoding}; this version "
                      f"of timebank reads encoding {ENCODING}")
        if block.previous_hash != previous:
            found.add("block", number, "does not follow the block before it (previous hash "
                      "differs): blocks were removed, reordered or rewritten")
        rows = conn.execute(
            select(sealed_entries.c.entry_id, sealed_entries.c.entry_hash)
            .where(sealed_entries.c.seal_id == number)
            .order_by(sealed_entries.c.entry_id)
        ).all()
        ids = [int(r.entry_id) for r in rows]
        if len(ids) != block.entries or (ids and (ids[0], ids[-1]) != (
                block.first_entry_id, block.last_entry_id)):
            found.add("block", number, f"lists {len(ids)} entries, it sealed {block.entries}")
        now = entry_hashes(conn, ids)
        for entry_id, stored in rows:
            if entry_id not in now:
                found.add("entry", entry_id, f"sealed in block {number} but missing (deleted)")
            elif now[entry_id] != stored:
                found.add("entry", entry_id, f"differs from what block {number} sealed "
                          "(the entry, a posting, an account's owner or a lot movement "
                          "was changed)")
        if chain_hash(number, str(block.previous_hash), (r.entry_hash for r in rows)) != (
                block.block_hash):
            found.add("block", number, "its hash does not match the entries it lists")
        expected, previous = number + 1, str(block.block_hash)
        sealed += len(ids)
        last_at = block.sealed_at
    return expected - 1, sealed, last_at


def _check_unsealed(conn: Connection, found: _Found, last_sealed_at: datetime | None) -> int:
    """Entries no existing block lists. Those recorded well before the latest seal cannot be
    late commits: they were inserted behind the library's back (or their seal rows deleted,
    or pointed at a block that does not exist, which is reported too)."""
    in_blocks = (
        select(sealed_entries.c.entry_id)
        .join(seals, seals.c.id == sealed_entries.c.seal_id)
        .subquery()
    )
    unsealed = (
        select(entries.c.id, entries.c.recorded_at)
        .outerjoin(in_blocks, in_blocks.c.entry_id == entries.c.id)
        .where(in_blocks.c.entry_id.is_(None))
    )
    count = conn.execute(select(func.count()).select_from(unsealed.subquery())).scalar_one()
    for entry_id, seal_id in conn.execute(
        select(sealed_entries.c.entry_id, sealed_entries.c.seal_id)
        .outerjoin(seals, seals.c.id == sealed_entries.c.seal_id)
        .where(seals.c.id.is_(None))
        .order_by(sealed_entries.c.entry_id)
    ):
        found.add("entry", entry_id, f"its seal record names block {seal_id}, which does not "
                  "exist")
    if last_sealed_at is not None:
        cutoff = last_sealed_at.timestamp() - LATE_GRACE_SECONDS
        for entry_id, recorded_at in conn.execute(unsealed.order_by(entries.c.id)):
            if recorded_at.timestamp() < cutoff:
                found.add("entry", entry_id, f"recorded at {recorded_at.isoformat()}, before "
                          f"the latest seal ({last_sealed_at.isoformat()}), yet in no block: "
                          "inserted behind the library's back, or its seal record deleted")
    return int(count)


def _check_lots(conn: Connection, found: _Found) -> None:
    """Each lot's remaining minutes are its minutes less every use of it."""
    for table, uses, key, label in (
        (lots, lot_uses, lot_uses.c.lot_id, "lot"),
        (pool_lots, pool_lot_uses, pool_lot_uses.c.pool_lot_id, "pool lot"),
    ):
        spent = select(key.label("lot_id"), func.sum(uses.c.minutes).label("minutes")).group_by(
            key).subquery()
        rows = conn.execute(
            select(table.c.id, table.c.minutes, table.c.remaining_minutes,
                   func.coalesce(spent.c.minutes, 0))
            .outerjoin(spent, spent.c.lot_id == table.c.id)
            .where(table.c.remaining_minutes != table.c.minutes - func.coalesce(spent.c.minutes, 0))
            .order_by(table.c.id)
        )
        for lot_id, minutes, remaining, used in rows:
            found.add("lot", f"{label} {lot_id}", f"{remaining} remaining, but {minutes} "
                      f"earned less {used} used leaves {int(minutes) - int(used)}")


def _check_redemption_origins(conn: Connection, found: _Found) -> None:
    """Each redemption's clearing rows are its lot uses summed by the site where the lots
    were earned, with the redemption's own programme, site and time; nothing else."""
    details = {
        "missing": "its lot uses give {} minutes from site {}, not stored",
        "stray": "{} minutes from site {} stored, not from its lot uses",
    }
    for label, row in differing_origins(conn):
        found.add("clearing", f"redemption entry {row.entry_id}",
                  details[label].format(row.minutes, row.origin_site_id))


def _check_holders(conn: Connection, found: _Found) -> None:
    """Each member's balance is the sum of their open lots; each pool's, of its pool lots."""
    for owner, table, account_col, lot_table, lot_owner, label in (
        (members.c.id, members, members.c.account_id, lots, lots.c.member_id, "member"),
        (regions.c.id, regions, regions.c.pool_account_id, pool_lots, pool_lots.c.region_id,
         "pool of region"),
    ):
        held = select(lot_owner.label("owner"), func.sum(lot_table.c.remaining_minutes).label(
            "minutes")).group_by(lot_owner).subquery()
        rows = conn.execute(
            select(owner, accounts.c.code, accounts.c.posted_minutes,
                   func.coalesce(held.c.minutes, 0))
            .select_from(table)
            .join(accounts, accounts.c.id == account_col)
            .outerjoin(held, held.c.owner == owner)
            .where(accounts.c.posted_minutes != func.coalesce(held.c.minutes, 0))
            .order_by(owner)
        )
        for owner_id, _code, balance, in_lots in rows:
            found.add("holder", f"{label} {owner_id}",
                      f"balance {balance}, but its open lots hold {in_lots}")


def _check_kept(conn: Connection, found: _Found, kept: Digest, sealed: int) -> None:
    row = conn.execute(select(seals.c.block_hash).where(seals.c.id == kept.block)).first()
    if row is None:
        found.add("digest", kept.block, "the kept digest names a block the database no longer "
                  "has: sealed history was removed")
    elif row.block_hash != kept.block_hash:
        found.add("digest", kept.block, "the block's hash differs from the kept digest: sealed "
                  "history was rewritten (even if every hash after it was recomputed)")
    elif sealed < kept.entries_sealed:
        found.add("digest", kept.block, f"{kept.entries_sealed} entries were sealed when the "
                  f"digest was kept, {sealed} now")
