"""The documents two programmes exchange: vouchers, acknowledgements and statements.

Each is a JSON object with a ``format`` (so one kind can never pass for another) and a
``signature``: HMAC-SHA256, in hex, under the key the two programmes share, of the
canonical encoding of every other field (keys sorted, no spaces, ASCII only). Only member
numbers travel, never a name or an identity.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Final

from timebank import errors

VOUCHER: Final = "timebank-voucher/1"
ACKNOWLEDGEMENT: Final = "timebank-acknowledgement/1"
STATEMENT: Final = "timebank-statement/1"
#: The largest document accepted: a statement lists every voucher between two programmes.
DOCUMENT_BYTES_MAX: Final = 16 * 1024 * 1024
#: Vouchers and acknowledgements are stored as received (canonical): they fit a TEXT column
#: on every database (MariaDB's holds 65,535 bytes).
STORED_BYTES_MAX: Final = 60_000

#: Fields and their types, per format (bool is not an int here).
_FIELDS: Final[dict[str, dict[str, type]]] = {
    VOUCHER: {
        "voucher": str,
        "from": str,
        "to": str,
        "issued_at": str,
        "sender": int,
        "recipient": int,
        "relation": str,
        "minutes": int,
        "credited_minutes": int,
        "rate": dict,
        "origin": list,
    },
    ACKNOWLEDGEMENT: {
        "voucher": str,
        "from": str,
        "to": str,
        "voucher_digest": str,
        "status": str,
        "reason": str,
        "recipient": int,
        "credited_minutes": int,
        "decided_at": str,
    },
    STATEMENT: {
        "from": str,
        "to": str,
        "as_of": str,
        "balance_minutes": int,
        "vouchers": list,
    },
}


def canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def sign(fields: dict[str, Any], key: bytes) -> str:
    """The signed document, as text."""
    signature = hmac.new(key, canonical(fields), hashlib.sha256).hexdigest()
    return canonical({**fields, "signature": signature}).decode("ascii")


def digest(document: str) -> str:
    """What an acknowledgement names its voucher by."""
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


def read(document: str | bytes, kind: str) -> dict[str, Any]:
    """The fields of an unverified document of ``kind``; SignatureError when it is not one."""
    if isinstance(document, bytes):
        if len(document) > DOCUMENT_BYTES_MAX:
            raise errors.SignatureError("the document is too large")
        try:
            document = document.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.SignatureError("the document is not UTF-8 text") from None
    if not isinstance(document, str) or len(document) > DOCUMENT_BYTES_MAX:
        raise errors.SignatureError("a document is JSON text of at most 16 MiB")
    try:
        fields = json.loads(document, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError):
        raise errors.SignatureError("the document is not valid JSON") from None
    try:
        # Text the databases can store: no lone surrogate, no NUL.
        stored = json.dumps(fields, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise errors.SignatureError("the document holds text that is not Unicode") from None
    if b"\\u0000" in stored:
        raise errors.SignatureError("the document holds a NUL character")
    if not isinstance(fields, dict) or fields.get("format") != kind:
        raise errors.SignatureError(f"the document is not a {kind} document")
    expected = {**_FIELDS[kind], "format": str, "signature": str}
    if set(fields) != set(expected):
        raise errors.SignatureError(
            f"a {kind} document has exactly the fields {', '.join(sorted(expected))}"
        )
    for name, wanted in expected.items():
        value = fields[name]
        if type(value) is not wanted:
            raise errors.SignatureError(f"field {name!r} of the {kind} document is malformed")
    if kind != STATEMENT and len(canonical(fields)) > STORED_BYTES_MAX:
        raise errors.SignatureError(f"a {kind} document has at most {STORED_BYTES_MAX} bytes")
    return fields


def verify(fields: dict[str, Any], key: bytes) -> None:
    """Refuse unless ``fields`` carry the signature of ``key`` over everything else."""
    unsigned = {name: value for name, value in fields.items() if name != "signature"}
    expected = hmac.new(key, canonical(unsigned), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, fields["signature"]):
        raise errors.SignatureError(
            f"the {fields['format']} document {fields.get('voucher', '')!r} does not carry the "
            f"signature of the key shared with {fields['from']!r}: forged or altered"
        )


def _finite(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of range")
    return number


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")
