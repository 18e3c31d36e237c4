"""Option types and the options many commands share."""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import click

from timebank.bank import TimeBank

F = TypeVar("F", bound=Callable[..., Any])


class Moment(click.ParamType[datetime, Any]):
    """An ISO 8601 date and time, e.g. ``2026-11-29T09:30+08:00``. Without a UTC offset it
    is read in the programme's time zone (its policy's), where the command names one."""

    name = "datetime"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 date and time, e.g. "
                      "2026-11-29T09:30 or 2026-11-29T09:30+08:00", param, ctx)


class Day(click.ParamType[date, Any]):
    """A calendar day, ``YYYY-MM-DD``."""

    name = "day"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> date:
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a day (YYYY-MM-DD)", param, ctx)


MOMENT = Moment()
DAY = Day()
#: A record's id: a positive 64-bit integer (larger ones cannot name anything).
ID = click.IntRange(1, 2**63 - 1)


def local(bank: TimeBank, programme: str, moment: datetime | None) -> datetime | None:
    """``moment`` with the programme's time zone when it came without a UTC offset."""
    if moment is None or moment.utcoffset() is not None:
        return moment
    zone = bank.policy(programme).policy.timezone
    return moment.replace(tzinfo=ZoneInfo(zone))


def programme_option(fn: F) -> F:
    return click.option(
        "--programme", "-p", required=True, envvar="TIMEBANK_PROGRAMME", show_envvar=True,
        help="The programme's code.",
    )(fn)


def operator_option(fn: F) -> F:
    return click.option(
        "--operator", "-o", required=True, envvar="TIMEBANK_OPERATOR", show_envvar=True,
        help="The operator acting (their code); the ledger names them on what they do.",
    )(fn)


def key_option(fn: F) -> F:
    return click.option(
        "--idempotency-key", "-k", "key", metavar="KEY",
        help="Names this act: running it again with the same key replays it instead of "
        "doing it twice. Default: a new key, printed on stderr.",
    )(fn)


def read_document(path: str) -> dict[str, Any]:
    """A JSON or TOML file (by its suffix; ``-`` reads JSON from stdin) as a dict."""
    try:
        if path == "-":
            text, suffix = sys.stdin.read(), ".json"
        else:
            text, suffix = Path(path).read_text(encoding="utf-8"), Path(path).suffix.lower()
    except OSError as error:
        raise click.BadParameter(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise click.BadParameter(f"{path} is not UTF-8 text") from None
    try:
        data = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as error:
        kind = "TOML" if suffix == ".toml" else "JSON"
        raise click.BadParameter(f"{path} is not valid {kind}: {error}") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path}: expected an object (a table) at the top")
    return data


def read_hidden(prompt: str) -> str:
    """One line that must not appear on the command line (an identity number): asked for
    without echo on a terminal, else read from stdin."""
    if sys.stdin.isatty():
        return str(click.prompt(prompt, hide_input=True, err=True))
    line = sys.stdin.readline()
    if not line:
        raise click.UsageError(f"{prompt}: expected one line on stdin")
    return line.rstrip("\r\n")
