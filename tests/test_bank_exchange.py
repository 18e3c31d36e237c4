"""Exchange between two independent programmes, each in its own database (tests/exchangeworld.py:
Shanghai is A, Gansu is B): the three steps (send, accept, record), refusals on either side,
unit rates, hostile documents and crashes between and inside the steps. Every refusal and
every rejected document is checked to change nothing; every scenario ends with both
reconciliations agreed and mirrored, nothing in flight and the minutes of each side conserved.

Mostly two SQLite files; the full flow also runs with B on PostgreSQL and MariaDB.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from sqlalchemy import select

from tests._databases import MARIADB, POSTGRES, SQLITE, UrlFactory, backends
from tests.clocks import T0, Clock
from tests.dbdump import dump
from tests.exchangeworld import (
    KEY,
    POLICY_B,
    Pair,
    assert_settled,
    lot_shape,
    pair,
    refused_on,
)
from timebank import (
    BankObjectNotFoundError,
    IdempotencyConflictError,
    InvalidAmountError,
    InvalidInputError,
    LimitExceededError,
    MemberStateError,
    PermissionDeniedError,
    PolicyViolationError,
    SignatureError,
    VoucherReplayError,
)
from timebank.bank import UnitRate, VoucherView, _lots, _vouchers
from timebank.bank.schema import members

b_url = backends(SQLITE, POSTGRES, MARIADB, name="b_url", migrated=True)

MakePair = Callable[..., Pair]


@pytest.fixture
def make(fresh_db_url_factory: UrlFactory) -> Iterator[MakePair]:
    """``make(**options)``: A and B in two fresh SQLite files (options as for ``pair``)."""
    made: list[Pair] = []

    def _make(**options: Any) -> Pair:
        made.append(
            pair(fresh_db_url_factory(SQLITE, migrated=True),
                 fresh_db_url_factory(SQLITE, migrated=True), Clock(), **options)
        )
        return made[-1]

    try:
        yield _make
    finally:
        for p in made:
            p.dispose()


@pytest.fixture
def ex(make: MakePair) -> Pair:
    return make()


def ack_of(view: VoucherView) -> str:
    assert view.acknowledgement is not None
    return view.acknowledgement


def fields_of(document: str) -> dict[str, Any]:
    fields: dict[str, Any] = json.loads(document)
    return fields


def resign(document: str, key: bytes = KEY, /, **changes: Any) -> str:
    """The document with ``changes``, signed again (by whoever holds ``key``)."""
    fields = fields_of(document)
    del fields["signature"]
    fields.update(changes)
    return _vouchers.sign(fields, key)


def altered(document: str, **changes: Any) -> str:
    """The document with ``changes``, keeping its old signature."""
    return json.dumps({**fields_of(document), **changes})


# --- 1. the full flow ------------------------------------------------------------------------


def test_full_flow_moves_minutes_once_and_both_sides_reconcile(
    fresh_db_url_factory: UrlFactory, b_url: str
) -> None:
    """Send, accept, record with A on SQLite and B on each backend: the sender is debited at
    once, the recipient credited by a lot earned at B's entry station, the partner accounts
    mirror each other, and reconciliation is agreed and mirrored from both sides, showing
    the voucher in flight between the steps and nothing in flight at the end."""
    ex = pair(fresh_db_url_factory(SQLITE, migrated=True), b_url, Clock())
    try:
        a, b = ex.a, ex.b
        mother = b.members["mother"]
        assert a.reconcile(b).agreed

        sent = a.send("v1", "chen", mother, 300)
        assert (sent.direction, sent.status, sent.minutes, sent.remote_minutes) == (
            "out", "in_flight", 300, 300)
        assert a.balance("chen") == 120 == a.bank.lots_total(a.members["chen"])
        assert a.position() == 300
        rec = a.reconcile(b)
        assert rec.agreed
        assert rec.mirrored
        assert [(f.voucher_id, f.sender, f.minutes, f.stage) for f in rec.in_flight] == [
            (sent.voucher_id, "shanghai", 300, "not received")]
        assert rec.our_position_minutes == 0

        got = b.accept(sent.document)
        assert (got.direction, got.status, got.reason, got.member_id) == (
            "in", "accepted", "", mother)
        assert (got.minutes, got.remote_minutes, got.remote_member_id) == (
            300, 300, a.members["chen"])
        assert b.balance("mother") == 300
        [lot] = b.lots("mother")
        assert (lot.minutes, lot.origin_site, lot.earned_on, lot.expires_on) == (
            300, "lanzhou-cs", T0.date(), T0.date() + timedelta(days=730))
        assert b.position() == -300
        assert [f.stage for f in a.reconcile(b).in_flight] == ["acknowledgement not recorded"]

        done = a.record(ack_of(got))
        assert (done.status, done.acknowledgement, done.return_entry_id) == (
            "accepted", got.acknowledgement, None)
        assert a.position() == 300 == -b.position()
        for ours, theirs, position in ((a, b, 300), (b, a, -300)):
            rec = ours.reconcile(theirs)
            assert (rec.our_position_minutes, rec.their_position_minutes) == (position, -position)
        assert a.bank.ledger.entry(sent.entry_id or 0).code == "voucher_out"
        assert b.bank.ledger.entry(got.entry_id or 0).code == "voucher_in"
        assert_settled(ex)
    finally:
        ex.dispose()


def test_voucher_carries_the_origin_of_the_minutes_and_no_personal_data(ex: Pair) -> None:
    """The voucher says where the minutes were earned (station, region, minutes, days) and
    names people only by member number: no name, identity, birth date or phone."""
    a, b = ex.a, ex.b
    sent = a.send("v1", "chen", b.members["mother"], 300)
    fields = fields_of(sent.document)
    assert set(fields) == {
        "format", "voucher", "from", "to", "issued_at", "sender", "recipient", "relation",
        "minutes", "credited_minutes", "rate", "origin", "signature"}
    assert fields["origin"] == [
        {"site": "huamu-sw", "region": "huamu", "minutes": 240,
         "earned_from": "2026-10-31", "earned_to": "2026-10-31"},
        {"site": "jingan-vol", "region": "jingan", "minutes": 60,
         "earned_from": "2026-11-01", "earned_to": "2026-11-01"},
    ]
    assert (fields["sender"], fields["recipient"]) == (a.members["chen"], b.members["mother"])
    with a.engine.connect() as conn:
        hashes = conn.execute(select(members.c.identity_hash)).scalars().all()
    personal = [str(h) for h in hashes]
    for side in (a, b):
        for member_id in side.members.values():
            data = side.bank.personal_data(member_id)
            personal += [data.display_name, data.birth_date.isoformat(), str(data.phone)]
    personal += ["ID-shanghai-chen", "Fullname"]
    for text in personal:
        assert text not in sent.document
    got = b.accept(sent.document)
    assert got.document == sent.document
    assert all(text not in ack_of(got) for text in personal)


# --- 2. refusals by B return the minutes -------------------------------------------------------


def _unknown(ex: Pair) -> int:
    return 9_999


def _frozen(ex: Pair) -> int:
    return ex.b.members["frozen"]


def _over_the_cap(ex: Pair) -> int:
    policy = POLICY_B.model_copy(update={"storage_cap_minutes": 100})
    ex.b.bank.set_policy("gansu", policy, effective_from=T0, operator="gs-admin")
    return ex.b.members["mother"]


def _over_bs_trust_line(ex: Pair) -> int:
    ex.b.bank.set_trust_line("gansu", "shanghai", minutes=100, operator="gs-admin")
    return ex.b.members["mother"]


@pytest.mark.parametrize(
    ("recipient", "reason"),
    [
        pytest.param(_unknown, "unknown recipient: no member 9999", id="unknown-recipient"),
        pytest.param(_frozen, "ineligible recipient: member 2 is frozen", id="frozen"),
        pytest.param(_over_the_cap, "ineligible recipient: .* storage cap of 100$",
                     id="storage-cap"),
        pytest.param(_over_bs_trust_line, "trust line: .*100", id="trust-line-of-b"),
    ],
)
def test_a_refusal_by_b_returns_the_minutes_as_the_same_lots(
    ex: Pair, recipient: Callable[[Pair], int], reason: str
) -> None:
    """B refuses (unknown or frozen recipient, storage cap, B's trust line smaller than
    A's): the acknowledgement says "refused" and why, B credits nobody, and when A records
    it a reversal gives the sender back lots with the same origin, earned day and expiry."""
    a, b = ex.a, ex.b
    to = recipient(ex)
    chen = a.members["chen"]
    shape = lot_shape(a.lots("chen"))
    sent = a.send("v1", "chen", to, 120)
    assert a.balance("chen") == 300

    got = b.accept(sent.document)
    assert (got.status, got.entry_id) == ("refused", None)
    assert fields_of(ack_of(got))["status"] == "refused"
    assert got.reason == fields_of(ack_of(got))["reason"]
    assert b.position() == 0
    assert re.match(reason, got.reason), got.reason
    assert sum(b.balance(name) for name in ("mother", "frozen")) == 0

    back = a.record(ack_of(got))
    assert (back.status, back.reason) == ("refused", got.reason)
    assert back.return_entry_id is not None
    assert a.bank.ledger.entry(back.return_entry_id).reverses_entry_id == sent.entry_id
    assert a.balance("chen") == 420 == a.bank.lots_total(chen)
    assert lot_shape(a.lots("chen")) == shape
    assert a.position() == 0
    assert_settled(ex)


# --- 3. refusals on A change nothing ---------------------------------------------------------


def test_a_refuses_a_voucher_over_its_trust_line(make: MakePair) -> None:
    """A's trust line bounds what is in flight or owed: 120 minutes with a line of 100 are
    refused, and so is what no longer fits once 60 are out."""
    ex = make(trust_a=100)
    a, mother = ex.a, ex.b.members["mother"]
    err = refused_on(a, LimitExceededError, lambda: a.send("v1", "chen", mother, 120))
    assert (err.limit, err.limit_minutes, err.available_minutes) == ("trust line", 100, 100)
    a.send("v2", "chen", mother, 60)
    err = refused_on(a, LimitExceededError, lambda: a.send("v3", "lin", mother, 60))
    assert err.available_minutes == 40


def test_a_refuses_more_minutes_than_the_sender_has(ex: Pair) -> None:
    """Lin has 240 minutes: 241 are refused by the floor of his account."""
    a, mother = ex.a, ex.b.members["mother"]
    err = refused_on(a, LimitExceededError, lambda: a.send("v1", "lin", mother, 241))
    assert err.limit == "floor"


def test_a_refuses_a_relation_the_policy_does_not_allow(ex: Pair) -> None:
    """Shanghai's policy allows gifts to direct relatives only: not to a friend."""
    a, mother = ex.a, ex.b.members["mother"]
    refused_on(a, PolicyViolationError,
               lambda: a.send("v1", "chen", mother, 60, relation="friend"), match="friend")


def test_a_refuses_an_amount_that_does_not_convert_exactly(make: MakePair) -> None:
    """At 4 of Shanghai's minutes for 3 of Gansu's, 10 minutes would credit 7.5: refused."""
    ex = make(rate_a=UnitRate(ours=4, theirs=3), rate_b=UnitRate(ours=3, theirs=4))
    a, mother = ex.a, ex.b.members["mother"]
    refused_on(a, InvalidAmountError, lambda: a.send("v1", "chen", mother, 10),
               match="multiple of 4")


def test_a_refuses_an_operator_of_another_station(ex: Pair) -> None:
    """Chen belongs to Huamu: the recorder of Jing'an may not send his minutes."""
    a, mother = ex.a, ex.b.members["mother"]
    refused_on(a, PermissionDeniedError,
               lambda: a.send("v1", "chen", mother, 60, operator="rec-jingan"))


def test_the_same_key_replays_the_voucher_and_other_content_conflicts(ex: Pair) -> None:
    """Sending again with the same key returns the same voucher and writes nothing; the
    same key with another amount or recipient is refused."""
    a, mother = ex.a, ex.b.members["mother"]
    first = a.send("v1", "chen", mother, 60)
    before = dump(a.engine)
    assert a.send("v1", "chen", mother, 60) == first
    assert dump(a.engine) == before
    err = refused_on(a, IdempotencyConflictError, lambda: a.send("v1", "chen", mother, 61))
    assert err.fields == ("minutes",)
    err = refused_on(a, IdempotencyConflictError, lambda: a.send("v1", "chen", mother + 1, 60))
    assert err.fields == ("remote_member_id",)


# --- 4. unit rates ---------------------------------------------------------------------------


def test_rate_converts_and_both_sides_record_both_amounts(make: MakePair) -> None:
    """4 of Shanghai's minutes are worth 3 of Gansu's: 120 sent credit 90, each side records
    both amounts, each account holds its own minutes and reconciliation is mirrored. Back the
    other way, 90 of Gansu's credit 120 of Shanghai's and both positions return to zero."""
    ex = make(rate_a=UnitRate(ours=4, theirs=3), rate_b=UnitRate(ours=3, theirs=4))
    a, b = ex.a, ex.b
    sent = a.send("v1", "chen", b.members["mother"], 120)
    assert (sent.minutes, sent.remote_minutes) == (120, 90)
    assert (fields_of(sent.document)["credited_minutes"], fields_of(sent.document)["rate"]) == (
        90, {"ours": 4, "theirs": 3})
    got = b.accept(sent.document)
    assert (got.status, got.minutes, got.remote_minutes) == ("accepted", 90, 120)
    assert b.balance("mother") == 90
    a.record(ack_of(got))
    assert (a.position(), b.position()) == (120, -90)
    for ours, theirs, position in ((a, b, 120), (b, a, -90)):
        rec = ours.reconcile(theirs)
        assert rec.agreed
        assert rec.mirrored
        assert rec.our_position_minutes == position
    assert_settled(ex)

    back = b.send("w1", "ma", a.members["zhou"], 90)
    assert (back.minutes, back.remote_minutes) == (90, 120)
    a_got = a.accept(back.document)
    assert (a_got.status, a_got.minutes) == ("accepted", 120)
    b.record(ack_of(a_got))
    assert a.balance("zhou") == 120
    assert (a.position(), b.position()) == (0, 0)
    assert_settled(ex)


def test_a_rate_the_sides_do_not_share_is_refused_by_b(make: MakePair) -> None:
    """Shanghai holds 4 for 3, Gansu 1 for 1: Gansu refuses with a "rate" reason and the
    minutes go back to the sender."""
    ex = make(rate_a=UnitRate(ours=4, theirs=3))
    a, b = ex.a, ex.b
    sent = a.send("v1", "chen", b.members["mother"], 120)
    got = b.accept(sent.document)
    assert got.status == "refused"
    assert got.reason.startswith("rate:")
    assert b.balance("mother") == 0
    a.record(ack_of(got))
    assert a.balance("chen") == 420
    assert_settled(ex)


# --- 5. hostile documents --------------------------------------------------------------------

VOUCHER_TAMPERS: dict[str, Callable[[str], str | bytes]] = {
    "minutes-altered": lambda doc: altered(doc, minutes=3000, credited_minutes=3000),
    "recipient-altered": lambda doc: altered(doc, recipient=3),
    "origin-altered": lambda doc: altered(doc, origin=[]),
    "signature-removed": lambda doc: altered(doc, signature=""),
    "another-key": lambda doc: resign(doc, b"a key nobody shares"),
    "addressed-elsewhere": lambda doc: resign(doc, to="hubei"),
    "from-a-stranger": lambda doc: resign(doc, **{"from": "hubei"}),
    "signed-negative-minutes": lambda doc: resign(doc, minutes=-120, credited_minutes=-120),
    "signed-bool-minutes": lambda doc: resign(doc, minutes=True, credited_minutes=True),
    "signed-bad-rate": lambda doc: resign(doc, rate={"ours": 0, "theirs": 0}),
    "signed-extra-field": lambda doc: resign(doc, name="Chen Fullname"),
    "not-json": lambda doc: "a voucher, honestly",
    "not-utf8": lambda doc: b"\xff\xfe" + doc.encode(),
    "json-list": lambda doc: "[]",
    "wrong-format": lambda doc: resign(doc, format="timebank-voucher/2"),
    "nan": lambda doc: doc.replace('"minutes":120', '"minutes":NaN'),
}


@pytest.mark.parametrize("tamper", VOUCHER_TAMPERS.values(), ids=VOUCHER_TAMPERS.keys())
def test_b_rejects_a_voucher_that_does_not_verify_and_changes_nothing(
    ex: Pair, tamper: Callable[[str], str | bytes]
) -> None:
    """Altered fields under the old signature, another key, another addressee, a stranger,
    malformed numbers even when signed, not JSON or not a voucher: SignatureError, and B's
    database is exactly as it was. The genuine voucher is accepted afterwards."""
    a, b = ex.a, ex.b
    sent = a.send("v1", "chen", b.members["mother"], 120)
    hostile = tamper(sent.document)
    refused_on(b, SignatureError, lambda: b.accept(hostile))
    assert b.accept(sent.document).status == "accepted"


def test_b_rejects_other_documents_passed_as_a_voucher(ex: Pair) -> None:
    """An acknowledgement or a statement is not a voucher, and a voucher goes only to the
    programme it is addressed to: all SignatureError on B, and on A for its own voucher."""
    a, b = ex.a, ex.b
    sent = a.send("v1", "chen", b.members["mother"], 120)
    ack = ack_of(b.accept(sent.document))
    for document in (ack, b.statement(), a.statement()):
        refused_on(b, SignatureError, partial(b.accept, document))
    refused_on(a, SignatureError, lambda: a.accept(sent.document))
    refused_on(a, SignatureError, lambda: a.record(sent.document))
    refused_on(b, SignatureError, lambda: b.record(ack))


def test_the_same_voucher_twice_gets_the_same_acknowledgement(ex: Pair) -> None:
    """Delivering a voucher again returns the same signed decision and writes nothing: the
    mother is credited once."""
    a, b = ex.a, ex.b
    sent = a.send("v1", "chen", b.members["mother"], 120)
    first = b.accept(sent.document)
    before = dump(b.engine)
    again = b.accept(sent.document)
    assert again == first
    assert b.accept(sent.document.encode()) == first
    assert dump(b.engine) == before
    assert b.balance("mother") == 120


def test_a_new_voucher_reusing_a_seen_id_is_a_replay(ex: Pair) -> None:
    """A correctly signed voucher with a seen id but other content (more minutes) is a
    VoucherReplayError and changes nothing; a voucher posing with the id of one B sent
    itself is not one A could issue (ids start with their sender's code): SignatureError."""
    a, b = ex.a, ex.b
    sent = a.send("v1", "chen", b.members["mother"], 120)
    b.accept(sent.document)
    bigger = resign(sent.document, minutes=240, credited_minutes=240)
    refused_on(b, VoucherReplayError, lambda: b.accept(bigger))
    theirs = b.send("w1", "ma", a.members["zhou"], 60)
    posing = resign(sent.document, voucher=theirs.voucher_id)
    refused_on(b, SignatureError, lambda: b.accept(posing))
    assert b.balance("mother") == 120


def test_a_rejects_forged_unknown_and_contradicting_acknowledgements(ex: Pair) -> None:
    """On A: an acknowledgement altered under its signature or signed with another key is a
    SignatureError, one for a voucher A never sent a BankObjectNotFoundError, a genuine one
    twice changes nothing the second time, and a signed one contradicting what was recorded
    is a VoucherReplayError. None of the refusals writes anything."""
    a, b = ex.a, ex.b
    sent = a.send("v1", "chen", b.members["mother"], 120)
    ack = ack_of(b.accept(sent.document))
    refused_on(a, SignatureError, lambda: a.record(altered(ack, status="refused")))
    refused_on(a, SignatureError, lambda: a.record(resign(ack, b"a key nobody shares")))
    refused_on(a, SignatureError, lambda: a.record(resign(ack, to="hubei")))
    refused_on(a, BankObjectNotFoundError,
               lambda: a.record(resign(ack, voucher="shanghai-0000")))
    refused_on(a, VoucherReplayError,
               lambda: a.record(resign(ack, voucher_digest="0" * 64)))
    first = a.record(ack)
    before = dump(a.engine)
    assert a.record(ack) == first
    assert dump(a.engine) == before
    refused_on(a, VoucherReplayError,
               lambda: a.record(resign(ack, status="refused", reason="changed our mind")))
    assert a.balance("chen") == 300
    assert_settled(ex)


# --- 6. crashes between and inside the steps ------------------------------------------------


def credited_once(ex: Pair, minutes: int = 120) -> None:
    """The mother got the voucher exactly once, as one lot; everything is settled."""
    assert ex.b.balance("mother") == minutes
    assert [lot.minutes for lot in ex.b.lots("mother")] == [minutes]
    assert len(ex.a.bank.vouchers("shanghai", "gansu")) == 1
    assert len(ex.b.bank.vouchers("gansu", "shanghai")) == 1
    assert_settled(ex)


def test_crash_after_send_sending_again_returns_the_same_voucher(ex: Pair) -> None:
    """The send committed but its caller lost the answer: sending again with the same key
    returns the same voucher (same document) and writes nothing; the flow completes once."""
    a, b = ex.a, ex.b
    a.send("v1", "chen", b.members["mother"], 120)  # the answer is lost
    before = dump(a.engine)
    again = a.send("v1", "chen", b.members["mother"], 120)
    assert dump(a.engine) == before
    assert [v.document for v in a.in_flight()] == [again.document]
    a.record(ack_of(b.accept(again.document)))
    credited_once(ex)


def test_lost_acknowledgement_redelivery_completes_exactly_once(ex: Pair) -> None:
    """B accepted but the acknowledgement was lost: A lists the voucher in flight, delivering
    its document again gets the same acknowledgement without a second credit, and recording
    it completes the exchange."""
    a, b = ex.a, ex.b
    sent = a.send("v1", "chen", b.members["mother"], 120)
    lost = b.accept(sent.document)
    [pending] = a.in_flight()
    assert pending.voucher_id == sent.voucher_id
    before = dump(b.engine)
    again = b.accept(pending.document)
    assert dump(b.engine) == before
    assert again.acknowledgement == lost.acknowledgement
    a.record(ack_of(again))
    credited_once(ex)


def test_crash_after_record_recording_again_is_a_no_op(ex: Pair) -> None:
    """A recorded the acknowledgement and then crashed: recording it again (accepted or
    refused) writes nothing; a refusal is returned only once."""
    a, b = ex.a, ex.b
    for key, recipient in (("v1", b.members["mother"]), ("v2", 9_999)):
        sent = a.send(key, "chen", recipient, 120)
        ack = ack_of(b.accept(sent.document))
        a.record(ack)
        before = dump(a.engine)
        assert a.record(ack).status == b.accept(sent.document).status
        assert dump(a.engine) == before
    assert a.balance("chen") == 300
    assert b.balance("mother") == 120
    assert_settled(ex)


def _boom(*args: object, **kwargs: object) -> Any:
    raise RuntimeError("the process died here")


def test_a_failure_inside_send_changes_nothing(ex: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash in the middle of the send (after the transfer, while recording which lots it
    took) rolls everything back: no voucher, no debit; the send then works once."""
    a, b = ex.a, ex.b
    with monkeypatch.context() as patch:
        patch.setattr(_lots, "record_uses", _boom)
        refused_on(a, RuntimeError, lambda: a.send("v1", "chen", b.members["mother"], 120))
    assert a.in_flight() == []
    sent = a.send("v1", "chen", b.members["mother"], 120)
    a.record(ack_of(b.accept(sent.document)))
    credited_once(ex)


@pytest.mark.parametrize(
    ("module", "name"),
    [pytest.param(_lots, "create", id="lot"), pytest.param(_vouchers, "sign", id="ack")],
)
def test_a_failure_inside_accept_changes_nothing(
    ex: Pair, monkeypatch: pytest.MonkeyPatch, module: object, name: str
) -> None:
    """A crash in the middle of the accept (after the credit, while making the lot or
    signing the acknowledgement) leaves B as it was; redelivery then credits once."""
    a, b = ex.a, ex.b
    sent = a.send("v1", "chen", b.members["mother"], 120)
    with monkeypatch.context() as patch:
        patch.setattr(module, name, _boom)
        refused_on(b, RuntimeError, lambda: b.accept(sent.document))
    assert b.balance("mother") == 0
    a.record(ack_of(b.accept(a.in_flight()[0].document)))
    credited_once(ex)


def test_a_failure_inside_record_changes_nothing(
    ex: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash while returning a refused voucher's lots leaves A as it was (still in
    flight); recording again returns the minutes once."""
    a, b = ex.a, ex.b
    shape = lot_shape(a.lots("chen"))
    sent = a.send("v1", "chen", 9_999, 120)
    ack = ack_of(b.accept(sent.document))
    with monkeypatch.context() as patch:
        patch.setattr(_lots, "arrive", _boom)
        refused_on(a, RuntimeError, lambda: a.record(ack))
    assert [v.voucher_id for v in a.in_flight()] == [sent.voucher_id]
    a.record(ack)
    a.record(ack)
    assert a.balance("chen") == 420
    assert lot_shape(a.lots("chen")) == shape
    assert_settled(ex)


def test_everything_lost_is_recovered_from_the_in_flight_lists(ex: Pair) -> None:
    """Vouchers lost on the way and acknowledgements lost on the way back, in both
    directions: delivering again what each side lists in flight settles everything."""
    a, b = ex.a, ex.b
    a.send("v1", "chen", b.members["mother"], 100)  # lost on the way
    b.accept(a.send("v2", "lin", 9_999, 50).document)  # refused, acknowledgement lost
    a.accept(b.send("w1", "ma", a.members["zhou"], 30).document)  # acknowledgement lost
    b.send("w2", "ma", a.members["chen"], 20)  # to A's member 1 (chen), lost
    assert len(a.in_flight()) == 2
    assert len(b.in_flight()) == 2
    for sender, receiver in ((a, b), (b, a)):
        for voucher in sender.in_flight():
            sender.record(ack_of(receiver.accept(voucher.document)))
    assert (a.balance("chen"), a.balance("lin"), a.balance("zhou")) == (340, 240, 30)
    assert (b.balance("mother"), b.balance("ma")) == (100, 250)
    assert_settled(ex)


# --- found by these tests, and fixed -------------------------------------------------------


def test_a_storage_cap_refusal_carries_no_identity_hash(ex: Pair) -> None:
    """Only member numbers may travel: a refusal's reason must not carry any part of the
    recipient's identity hash, nor their ledger account code (which names them in the
    other programme's ledger)."""
    a, b = ex.a, ex.b
    _over_the_cap(ex)
    ack = ack_of(b.accept(a.send("v1", "chen", b.members["mother"], 120).document))
    account = b.bank.member(b.members["mother"]).account
    with b.engine.connect() as conn:
        hashed = conn.execute(
            select(members.c.identity_hash).where(members.c.id == b.members["mother"])
        ).scalar_one()
    recorded = a.record(ack)
    for trace in (hashed[:20], account.rsplit(":", 1)[-1]):
        assert trace not in ack
        assert trace not in recorded.reason


def test_b_rejects_a_signed_voucher_with_numbers_past_64_bits(ex: Pair) -> None:
    """A signed voucher is still checked: minutes that no column can hold are malformed,
    a SignatureError that changes nothing."""
    a, b = ex.a, ex.b
    sent = a.send("v1", "chen", b.members["mother"], 120)
    huge = resign(sent.document, minutes=2**63, credited_minutes=2**63)
    refused_on(b, SignatureError, lambda: b.accept(huge))


def test_a_refusal_for_a_sender_who_died_meanwhile_can_be_recorded(ex: Pair) -> None:
    """Chen sends to an unknown number and dies before Gansu's refusal comes back: recording
    the refusal completes the voucher, the minutes going to the pool of his home region
    (as an estate with nobody designated), as pool lots that keep their origin."""
    a, b = ex.a, ex.b
    sent = a.send("v1", "chen", 9_999, 120)
    ack = ack_of(b.accept(sent.document))
    a.bank.set_member_status(a.members["chen"], "deceased", reason="died", operator="sh-admin")
    pool_before = a.bank.pool_lots_total(a.code, "huamu")
    recorded = a.record(ack)
    assert recorded.status == "refused"
    assert recorded.return_entry_id is not None
    assert a.in_flight() == []
    assert a.position() == 0
    assert a.bank.pool_lots_total(a.code, "huamu") == pool_before + 120
    pool = a.bank.region(a.code, "huamu").pool_account
    assert a.bank.ledger.balance(pool).posted_minutes == pool_before + 120


def test_a_refusal_for_a_frozen_sender_waits_until_they_are_unfrozen(ex: Pair) -> None:
    """A frozen sender's refused voucher is not returned while they are frozen (nothing
    moves for them): recording is refused with MemberStateError, changing nothing, and
    works once they are unfrozen."""
    a, b = ex.a, ex.b
    sent = a.send("v1", "chen", 9_999, 120)
    ack = ack_of(b.accept(sent.document))
    chen = a.members["chen"]
    a.bank.set_member_status(chen, "frozen", reason="audit", operator="sh-admin")
    refused_on(a, MemberStateError, lambda: a.record(ack))
    a.bank.set_member_status(chen, "active", reason="cleared", operator="sh-admin")
    assert a.record(ack).status == "refused"
    assert a.balance("chen") == 420
    assert_settled(ex)


# --- found in review, and fixed -------------------------------------------------------------


def test_the_trust_line_keeps_room_to_return_a_voucher_in_flight(make: MakePair) -> None:
    """Shanghai trusts Gansu for 100 minutes and has 100 in flight to an unknown number:
    Gansu's 200 cannot use the room that voucher made (it is refused for the trust line),
    so when Gansu's refusal comes back the minutes return within the line."""
    ex = make(trust_a=100, trust_b=600)
    a, b = ex.a, ex.b
    ours = a.send("v1", "chen", 9_999, 100)
    theirs = b.send("w1", "ma", a.members["zhou"], 200)
    answer = a.accept(theirs.document)
    assert answer.status == "refused"
    assert answer.reason.startswith("trust line")
    b.record(ack_of(answer))
    assert a.record(ack_of(b.accept(ours.document))).status == "refused"
    assert a.position() == 0
    assert a.balance("chen") == 420
    assert_settled(ex)


def test_set_trust_line_keeps_room_for_vouchers_in_flight(ex: Pair) -> None:
    """With 100 minutes in flight and a position of 100, the line cannot go below 100."""
    a = ex.a
    a.send("v1", "chen", 9_999, 100)
    refused_on(a, PolicyViolationError, lambda: a.bank.set_trust_line(
        a.code, a.partner, minutes=99, operator=a.admin))
    assert a.bank.set_trust_line(a.code, a.partner, minutes=100,
                                 operator=a.admin).trust_line_minutes == 100


def test_a_replay_with_another_relation_is_a_conflict(ex: Pair) -> None:
    """The relation is part of the voucher: the same key with another relation is refused."""
    a, b = ex.a, ex.b
    a.send("v1", "chen", b.members["mother"], 60)
    refused_on(a, IdempotencyConflictError, lambda: a.bank.send_voucher(
        "v1", programme=a.code, partner=a.partner, sender_id=a.members["chen"],
        recipient=b.members["mother"], relation="child", minutes=60, operator=a.recorder))


def test_amounts_and_numbers_out_of_range_are_refused_at_send(make: MakePair) -> None:
    """A voucher the receiver could never accept is not sent: credited minutes past what an
    entry carries (InvalidAmountError), a member number past 64 bits (InvalidInputError)."""
    ex = make(rate_a=UnitRate(ours=1, theirs=1_000_000),
              rate_b=UnitRate(ours=1_000_000, theirs=1))
    a, b = ex.a, ex.b
    refused_on(a, InvalidAmountError, lambda: a.send("v1", "chen", b.members["mother"], 1001))
    refused_on(a, InvalidInputError, lambda: a.send("v2", "chen", 2**63, 10))


@pytest.mark.parametrize("number", ["1e400", "-1e400"])
def test_an_infinite_number_is_a_signature_error(ex: Pair, number: str) -> None:
    """JSON numbers too large for a float are refused as malformed, before anything else."""
    a, b = ex.a, ex.b
    sent = a.send("v1", "chen", b.members["mother"], 60)
    hostile = sent.document.replace('"origin":[', f'"origin":[{number},', 1)
    refused_on(b, SignatureError, lambda: b.accept(hostile))


@pytest.mark.parametrize("reason", ["\ud800", "a\x00b"])
def test_an_acknowledgement_with_unstorable_text_is_refused(ex: Pair, reason: str) -> None:
    """Even signed, text no database can store (a lone surrogate, a NUL) is malformed."""
    a, b = ex.a, ex.b
    sent = a.send("v1", "chen", 9_999, 60)
    ack = resign(ack_of(b.accept(sent.document)), reason=reason)
    refused_on(a, SignatureError, lambda: a.record(ack))


def test_a_statement_listing_a_voucher_twice_does_not_agree(ex: Pair) -> None:
    """A statement that lists an accepted voucher twice (and doubles its balance) is a
    mismatch, not agreement; a statement with a malformed line or date is a SignatureError."""
    a, b = ex.a, ex.b
    a.record(ack_of(b.accept(a.send("v1", "chen", b.members["mother"], 100).document)))
    fields = fields_of(b.statement())
    doubled = resign(b.statement(), vouchers=fields["vouchers"] * 2,
                     balance_minutes=2 * fields["balance_minutes"])
    result = a.bank.reconcile(a.code, a.partner, doubled)
    assert not result.agreed
    assert any("more than once" in m for m in result.mismatches)
    line = {**fields["vouchers"][0], "minutes": True}
    for hostile in (resign(b.statement(), vouchers=[line]),
                    resign(b.statement(), as_of="yesterday")):
        with pytest.raises(SignatureError):
            a.bank.reconcile(a.code, a.partner, hostile)
