"""The export and import methods of :class:`~timebank.bank.TimeBank`: tables streamed out
as CSV or JSON Lines, and a programme's history read in from CSV (see
:mod:`timebank.bank._io`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, TextIO, TypeVar

from sqlalchemy import Connection

from timebank.bank import _bulk_history, _io, _set_history
from timebank.bank._ctx import Act
from timebank.bank._io import (
    EXPORT_COLUMNS,
    EXPORT_FORMATS,
    EXPORT_ROWS_PER_FETCH,
    EXPORT_ROWS_PER_FETCH_MAX,
    ExportFormat,
    ExportTable,
    ImportReport,
    RejectedRow,
)
from timebank.bank.models import require
from timebank.ledger import Ledger

T = TypeVar("T")
ImportMethod = Literal["bulk", "rows"]
IMPORT_METHODS: tuple[ImportMethod, ...] = ("bulk", "rows")
BulkEngine = Literal["memory", "set"]
_Apply = Callable[..., _io.BatchOutcome]
#: The engines of ``method="bulk"``, both proven against the row engine
#: (tests/test_bank_import_bulk.py): ``memory`` judges a batch in Python and writes it in
#: many-row statements (``_bulk_history``); ``set`` judges and writes it by SQL in the
#: database (``_set_history``, issue 10's design).
BULK_ENGINES: dict[BulkEngine, tuple[Callable[[Connection], bool], _Apply]] = {
    "memory": (_bulk_history.supported, _bulk_history.apply_batch),
    "set": (_set_history.supported, _set_history.apply_batch),
}
#: The one ``method="bulk"`` runs: the in-memory engine, faster on PostgreSQL and as fast
#: on SQLite as measured so far (BENCHMARKS.md, "The set-based import, built"); the
#: set-based one is chosen here by benchmarks and tests.
BULK_ENGINE: BulkEngine = "memory"


class IOMixin:
    """Methods that need the unit of work of the class they are mixed into."""

    ledger: Ledger

    def _act(self, fn: Callable[[Act], T]) -> T:  # pragma: no cover - TimeBank's
        raise NotImplementedError

    def _read(self, fn: Callable[[Connection], T]) -> T:  # pragma: no cover - TimeBank's
        raise NotImplementedError

    def export(
        self,
        table: ExportTable,
        out: TextIO,
        *,
        format: ExportFormat = "csv",
        programme: str | None = None,
        rows_per_fetch: int = EXPORT_ROWS_PER_FETCH,
    ) -> int:
        """Write ``table`` ("entries", "postings", "members" or "lots") to the text stream
        ``out`` as CSV (a header row, then one line a row) or JSON Lines (one object a
        line, with the same keys in the same order); returns the rows written. Columns:
        ``EXPORT_COLUMNS[table]``. Times are ISO-8601 in UTC with a ``Z``, days
        ``YYYY-MM-DD``; an empty CSV field (JSON ``null``) is no value.

        One snapshot of the database is read ``rows_per_fetch`` rows at a time and each row
        written as it comes: memory does not grow with the table (the read stays open while
        ``out`` is written). ``programme`` keeps that programme's rows: its members and
        their lots, the postings on its accounts (codes starting ``"<programme>:"``) and
        the entries with such a posting; without it, every row of the database. Members
        carry no identity data: no name, phone, identity hash, account code or birth date,
        only the birth year."""
        require(table in EXPORT_COLUMNS, f"table: one of {', '.join(EXPORT_COLUMNS)}")
        require(format in EXPORT_FORMATS, f"format: one of {', '.join(EXPORT_FORMATS)}")
        require(
            type(rows_per_fetch) is int and 1 <= rows_per_fetch <= EXPORT_ROWS_PER_FETCH_MAX,
            f"rows_per_fetch: 1 to {EXPORT_ROWS_PER_FETCH_MAX:,}",
        )
        require(programme is None or isinstance(programme, str), "programme is a code or None")
        return self._read(
            lambda conn: _io.export(conn, table, out, format, programme, rows_per_fetch)
        )

    def import_history(
        self,
        programme: str,
        source: TextIO,
        *,
        operator: str,
        confirm_operator: str | None = None,
        batch_rows: int | None = None,
        method: ImportMethod = "bulk",
        skip_rejected: bool = False,
    ) -> ImportReport:
        """Import a programme's history from CSV (columns ``HISTORY_COLUMNS``, see the
        README): services already done, recorded by ``operator`` and confirmed by
        ``confirm_operator`` (default ``operator``), their deposits and lots dated when
        they ended; and redemptions, by ``operator``, dated when they occurred. Each row's
        ``key`` is its idempotency key: a row already imported (same key, same content)
        writes nothing again and counts as ``already_present``. Gifts (``kind`` "gift")
        are dated when they were given, by ``operator``, with :meth:`give`'s rules.

        Every row is checked (format, then the same rules as :meth:`record_service`,
        :meth:`confirm_service` and :meth:`redeem`) and every rejected row is reported with
        its line and reason. Without ``batch_rows`` the file is one transaction: nothing is
        written if any row is rejected. With ``batch_rows=N`` the rows are taken in
        consecutive batches of N (data rows 1 to N, N+1 to 2N...: blank lines do not count,
        rejected rows do), read, checked and applied one batch after the other, each in one
        transaction: a batch with a rejected row is rolled back whole, and the following
        batches are judged without it; with ``skip_rejected=True`` the batch's other rows
        are committed instead (the rejected ones are reported and left out, and the rows
        after them are judged without them either way). Rows apply in file order, so a
        member's services come before the redemptions they pay for.

        ``method="bulk"`` (the default) judges a batch in memory against its state read in
        a few set-wise queries and writes it in many-row statements (``COPY`` on
        PostgreSQL); ``method="rows"`` runs every row through the one-at-a-time API under
        a savepoint. Both accept and reject the same rows with the same reasons, except
        that a key whose service is still pending is rejected by the bulk method (the rows
        method confirms it). On MariaDB both run
        the rows method (ids cannot be reserved there up front).

        An unknown programme or operator, or an auditor, raises before the file is read; a
        database error raises, and the batches committed before it stay committed."""
        require(isinstance(programme, str) and programme != "", "programme is a code")
        confirmer = operator if confirm_operator is None else confirm_operator
        for name, code in (("operator", operator), ("confirm_operator", confirmer)):
            require(isinstance(code, str) and code != "", f"{name} is an operator code")
        require(
            batch_rows is None or (type(batch_rows) is int and batch_rows >= 1),
            "batch_rows: a positive whole number, or None for one transaction",
        )
        require(method in IMPORT_METHODS, f"method: one of {', '.join(IMPORT_METHODS)}")
        require(type(skip_rejected) is bool, "skip_rejected: True or False")
        self._read(lambda conn: _io.check_import(conn, programme, {operator, confirmer}))
        history = _io.HistoryFile(source)
        header = history.header_problem()
        if header is not None:
            return ImportReport(
                rows_read=0,
                applied=0,
                already_present=0,
                rejected=(header,),
                rolled_back=0,
                batches=0,
                batches_committed=0,
            )
        rows_read = applied = present = rolled_back = batches = committed = 0
        rejected: list[RejectedRow] = []
        for batch in _io.batches(history.rows(), batch_rows):
            batches += 1
            rows_read += len(batch)
            outcome, ok = self._import_batch(
                programme, batch, (operator, confirmer), method, skip_rejected
            )
            rejected.extend(outcome.rejected)
            if ok:
                committed += 1
                applied += outcome.applied
                present += outcome.already_present
            else:
                rolled_back += len(batch) - len(outcome.rejected)
        return ImportReport(
            rows_read=rows_read,
            applied=applied,
            already_present=present,
            rejected=tuple(rejected),
            rolled_back=rolled_back,
            batches=batches,
            batches_committed=committed,
        )

    def _import_batch(
        self,
        programme: str,
        batch: Sequence[_io.Item],
        operators: tuple[str, str],
        method: ImportMethod,
        skip: bool,
    ) -> tuple[_io.BatchOutcome, bool]:
        """Apply one batch in one transaction (retried on contention): its outcome, and
        whether it was committed."""
        operator, confirmer = operators

        def apply(act: Act) -> _io.BatchOutcome:
            supported, apply_bulk = BULK_ENGINES[BULK_ENGINE]
            if method == "bulk" and supported(act.conn):
                return apply_bulk(
                    act, programme, batch, operator, confirmer, skip_rejected=skip
                )
            return _io.apply_batch(act, programme, batch, operator, confirmer, skip_rejected=skip)

        try:
            outcome = self._act(apply)
        except _io.BatchRejected as rolled:
            return rolled.outcome, False
        return outcome, True
