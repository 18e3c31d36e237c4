"""Output: tables for people (colour only on a terminal), one JSON document for scripts."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

import click
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

from timebank.cli._state import STATE

#: Width of tables written to a file or a pipe (a terminal's own width is used on one).
PIPE_WIDTH = 200


def console() -> Console:
    # rich decides colour from the stream (a terminal or not) and honours NO_COLOR.
    tty = sys.stdout.isatty()
    return Console(file=sys.stdout, soft_wrap=False, width=None if tty else PIPE_WIDTH)


def jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def emit(value: Any, *, title: str | None = None, text: str | None = None) -> None:
    """Print ``value``: as JSON with ``--json``; else ``text`` when given (a report's own
    rendering), else a table."""
    if STATE.json:
        click.echo(json.dumps(jsonable(value), ensure_ascii=False))
        return
    out = console()
    if text is not None:
        out.print(text, markup=False, highlight=False, emoji=False)
    elif isinstance(value, list) and not value:
        out.print(f"{title or 'result'}: none", markup=False, highlight=False, emoji=False)
    elif isinstance(value, list):
        out.print(rows_table(value, title=title))
    else:
        out.print(record_table(jsonable(value), title=title))


def note(message: str) -> None:
    """A line for people on stderr (never on stdout, which ``--json`` keeps for the document)."""
    click.echo(message, err=True)


def record_table(record: Mapping[str, Any], *, title: str | None = None) -> Table:
    # Every text is a rich Text: user data such as "[/]" must print as typed, never as markup.
    table = Table(title=_plain(title), show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in record.items():
        table.add_row(Text(key), _cell(key, value))
    return table


def rows_table(rows: Sequence[Any], *, title: str | None = None) -> Table:
    records = [jsonable(row) for row in rows]
    table = Table(title=_plain(title), title_justify="left")
    columns = list(records[0]) if records and isinstance(records[0], dict) else ["value"]
    for column in columns:
        table.add_column(Text(column), overflow="fold")
    for record in records:
        cells = [record.get(c) for c in columns] if isinstance(record, dict) else [record]
        table.add_row(*(_cell(name, cell) for name, cell in zip(columns, cells, strict=True)))
    return table


def _plain(title: str | None) -> Text | None:
    return None if title is None else Text(title)


def _cell(name: str, value: Any) -> Text:
    if value is None:
        return Text("-")
    if isinstance(value, dict | list):
        return Text(json.dumps(value, ensure_ascii=False))
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, int) and name.endswith("minutes"):
        return Text(f"{value:,}")  # amounts get thousands separators; ids and counts do not
    return Text(str(value))


def idempotency_key(given: str | None, command: str) -> str:
    """The key of an act: ``--idempotency-key`` or a new one, printed so that the act can be
    retried safely (the same key again replays it instead of doing it twice)."""
    if given is not None:
        return given
    key = f"cli-{command}-{uuid.uuid4().hex}"
    note(f"idempotency key: {key} (to retry safely, run again with --idempotency-key {key})")
    return key
