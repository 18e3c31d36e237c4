"""The exchange methods of :class:`~timebank.bank.TimeBank`: partners, vouchers,
acknowledgements, statements and reconciliation (see :mod:`timebank.bank._exchange`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, select

from timebank import errors
from timebank._minutes import as_minutes
from timebank.bank import _exchange
from timebank.bank._ctx import Act, one, programme_row
from timebank.bank.models import (
    PartnerStatement,
    PartnerView,
    Reconciliation,
    RelationKind,
    UnitRate,
    VoucherStatus,
    VoucherView,
    check_key,
    check_text,
    require,
)
from timebank.bank.schema import RELATION_KINDS, vouchers
from timebank.ledger import Ledger

T = TypeVar("T")


class ExchangeMixin:
    """Methods that need the unit of work of the class they are mixed into."""

    ledger: Ledger
    _exchange_secrets: dict[tuple[str, str], bytes]

    def _act(self, fn: Callable[[Act], T]) -> T:  # pragma: no cover - TimeBank's
        raise NotImplementedError

    def _read(self, fn: Callable[[Connection], T]) -> T:  # pragma: no cover - TimeBank's
        raise NotImplementedError

    # --- partners ------------------------------------------------------------------------

    def add_partner(
        self,
        programme: str,
        code: str,
        name: str,
        *,
        entry_site: str,
        trust_line_minutes: int,
        operator: str,
        rate: UnitRate | None = None,
    ) -> PartnerView:
        """Register the independent programme ``code`` (its own programme code) as a
        partner (administrators of the programme). Its minutes arrive as lots earned at
        ``entry_site``; the net position with it stays within ``trust_line_minutes`` either
        way; ``rate`` says what our minutes are worth in its minutes (both sides must hold
        the same rate). The shared key goes in ``exchange_secrets``, never the database."""
        check_text(code=code, name=name)
        line = as_minutes(trust_line_minutes, what="trust_line_minutes")
        require(line >= 0, "trust_line_minutes is at least 0")
        spec = {
            "code": code,
            "name": name,
            "entry_site": entry_site,
            "trust_line_minutes": line,
            "rate": UnitRate() if rate is None else rate,
        }
        require(isinstance(spec["rate"], UnitRate), "rate is a UnitRate")
        self._act(lambda act: _exchange.add_partner(act, programme, spec, operator))
        return self.partner(programme, code)

    def partner(self, programme: str, code: str) -> PartnerView:
        return self._read(lambda conn: _exchange.partner_view(conn, programme, code))

    def set_trust_line(
        self, programme: str, partner: str, *, minutes: int, operator: str
    ) -> PartnerView:
        """Change the trust line (administrators); never below the current position."""
        line = as_minutes(minutes, what="minutes")
        require(line >= 0, "a trust line is at least 0 minutes")
        self._act(lambda act: _exchange.set_trust_line(act, programme, partner, line, operator))
        return self.partner(programme, partner)

    # --- vouchers ------------------------------------------------------------------------

    def send_voucher(
        self,
        idempotency_key: str,
        *,
        programme: str,
        partner: str,
        sender_id: int,
        recipient: int,
        relation: RelationKind,
        minutes: int,
        operator: str,
    ) -> VoucherView:
        """Step 1: send ``minutes`` of member ``sender_id``'s to member number ``recipient``
        of the partner programme, who is the sender's ``relation`` (one the policy's
        ``gift_relations`` allows; vouchers count toward the yearly gift limit). Entered by
        a recorder of the sender's home station. The minutes leave the sender's lots at
        once; deliver ``document`` to the partner, whose acknowledgement goes to
        :meth:`record_acknowledgement`. The same key again returns the same voucher."""
        check_key(idempotency_key)
        require(type(sender_id) is int, "member ids are integers")
        require(
            type(recipient) is int and 0 < recipient <= 2**63 - 1, "recipient is a member number"
        )
        require(relation in RELATION_KINDS, f"relation: one of {', '.join(RELATION_KINDS)}")
        amount = as_minutes(minutes, what="minutes")
        if amount <= 0:
            raise errors.InvalidAmountError("minutes must be positive")
        data = {
            "partner": partner,
            "sender_id": sender_id,
            "recipient": recipient,
            "relation": relation,
            "minutes": amount,
            "operator": operator,
        }
        row_id = self._act(
            lambda act: _exchange.send(
                act, programme, idempotency_key, data, self._exchange_secrets
            )
        )
        return self._voucher(row_id)

    def accept_voucher(
        self, programme: str, document: str | bytes, *, operator: str
    ) -> VoucherView:
        """Step 2, on the recipient's side: verify a partner's voucher and credit the
        recipient, or refuse it (unknown or ineligible recipient, storage cap, trust line,
        rate). Either way the view's ``acknowledgement`` goes back to the sender. The same
        voucher again returns the same decision; one that does not verify raises
        SignatureError, and one whose id was seen with other content VoucherReplayError;
        neither changes anything. Operators of the programme's root region."""
        return self._voucher(
            self._act(
                lambda act: _exchange.accept(
                    act, programme, document, operator, self._exchange_secrets
                )
            )
        )

    def record_acknowledgement(
        self, programme: str, document: str | bytes, *, operator: str
    ) -> VoucherView:
        """Step 3, on the sender's side: record the partner's acknowledgement. A refusal
        returns the minutes to the sender by a reversal. The same acknowledgement again
        changes nothing. Operators of the programme's root region."""
        return self._voucher(
            self._act(
                lambda act: _exchange.record(
                    act, programme, document, operator, self._exchange_secrets
                )
            )
        )

    def voucher(self, programme: str, voucher_id: str) -> VoucherView:
        def find(conn: Connection) -> int:
            programme_id = programme_row(conn, programme).id
            row = one(
                conn,
                select(vouchers.c.id).where(
                    vouchers.c.programme_id == programme_id, vouchers.c.voucher_id == voucher_id
                ),
                "voucher",
                voucher_id,
            )
            return int(row.id)

        return self._voucher(self._read(find))

    def vouchers(
        self,
        programme: str,
        partner: str,
        *,
        status: VoucherStatus | None = None,
        limit: int = 1_000,
    ) -> list[VoucherView]:
        """The vouchers with ``partner``, oldest first; ``status="in_flight"`` lists what to
        deliver again after a crash or a lost message."""
        require(type(limit) is int and 1 <= limit <= 10_000, "limit: 1 to 10,000")
        return self._read(lambda conn: _exchange.listing(conn, programme, partner, status, limit))

    def _voucher(self, row_id: int) -> VoucherView:
        return self._read(lambda conn: _exchange.view(conn, row_id))

    # --- reconciliation --------------------------------------------------------------------

    def partner_statement(self, programme: str, partner: str) -> PartnerStatement:
        """Our account for ``partner`` and every voucher between us, signed: send
        ``document`` to the partner to reconcile."""
        now = self.ledger.clock()
        return self._read(
            lambda conn: _exchange.statement(conn, programme, partner, now, self._exchange_secrets)
        )

    def reconcile(
        self, programme: str, partner: str, their_statement: str | bytes
    ) -> Reconciliation:
        """Compare our account for ``partner`` with the partner's signed statement for us:
        what disagrees, what is in flight, and whether the positions mirror each other."""

        def read(conn: Connection) -> tuple[Any, Any]:
            theirs = _exchange.read_statement(
                conn, programme, their_statement, self._exchange_secrets
            )
            ours = _exchange.statement(
                conn, programme, partner, self.ledger.clock(), self._exchange_secrets
            )
            return ours, theirs

        ours, theirs = self._read(read)
        if theirs.programme != partner:
            raise errors.SignatureError(
                f"the statement comes from {theirs.programme!r}, not from {partner!r}"
            )
        return _exchange.reconcile(ours, theirs)
