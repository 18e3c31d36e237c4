"""The frame of the ``timebank`` command: the root group and its sections, the options every
command shares (``--db``, ``--json``, ``--debug``), and errors turned into exit codes."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
from sqlalchemy import exc as sa_exc

from timebank import errors
from timebank.cli import (
    EXIT_CONFLICT,
    EXIT_DATABASE,
    EXIT_INTERNAL,
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PERMISSION,
    EXIT_REFUSED,
    EXIT_SCHEMA,
    EXIT_USAGE,
)
from timebank.cli._state import STATE

F = TypeVar("F", bound=Callable[..., Any])

#: The error families, most specific first: the first match names the exit code.
FAMILIES: tuple[tuple[type[BaseException], int, str], ...] = (
    (errors.SchemaError, EXIT_SCHEMA, "schema"),
    (errors.StorageError, EXIT_DATABASE, "database"),
    (sa_exc.DBAPIError, EXIT_DATABASE, "database"),
    (errors.PermissionDeniedError, EXIT_PERMISSION, "permission"),
    (errors.NotFoundError, EXIT_NOT_FOUND, "not found"),
    (errors.ConflictError, EXIT_CONFLICT, "conflict"),
    (errors.RefusedError, EXIT_REFUSED, "refused"),
    (errors.InvalidInputError, EXIT_INVALID, "invalid input"),
    (errors.SignatureError, EXIT_INVALID, "invalid input"),
    # Values no database can take: text that is not Unicode, numbers past any range. (An
    # unknown schema revision is an InvalidInputError of timebank.upgrade.)
    (UnicodeError, EXIT_INVALID, "invalid input"),
    (OverflowError, EXIT_INVALID, "invalid input"),
)

EXIT_CODES_HELP = f"""\b
Exit codes:
  {EXIT_OK}  done
  {EXIT_INTERNAL}  unexpected error (a bug: run again with --debug for the traceback)
  {EXIT_USAGE}  usage: an unknown option, a missing argument, an unreadable file
  {EXIT_INVALID}  invalid input: the command's values break a rule of form
  {EXIT_REFUSED}  refused by a rule: the ledger's state or the policy says no
  {EXIT_NOT_FOUND}  not found: no such programme, site, member, service...
  {EXIT_PERMISSION}  permission: the operator may not do this there
  {EXIT_CONFLICT}  conflict: clashes with what is recorded (e.g. a key reused)
  {EXIT_DATABASE}  database unavailable or failing
  {EXIT_SCHEMA}  database not created, or not at this version's schema"""


class SectionedGroup(click.Group):
    """A group whose ``--help`` lists its commands under headings, in the order given."""

    def __init__(self, *args: Any, sections: Sequence[tuple[str, Sequence[str]]] = (),
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sections = tuple(sections)

    def list_commands(self, ctx: click.Context) -> list[str]:
        ordered = [name for _, names in self.sections for name in names]
        rest = sorted(set(self.commands) - set(ordered))
        return [name for name in (*ordered, *rest) if name in self.commands]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if not self.sections:
            super().format_commands(ctx, formatter)
            return
        longest = max(len(name) for name in self.commands)
        limit = max(30, formatter.width - 6 - longest)
        for heading, names in self.sections:
            rows = [
                (name, self.commands[name].get_short_help_str(limit=limit))
                for name in names
                if name in self.commands and not self.commands[name].hidden
            ]
            if rows:
                with formatter.section(heading):
                    formatter.write_dl(rows)


def _set_db(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        STATE.db = value


def _set_json(_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    STATE.json = STATE.json or value


def _set_debug(_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    STATE.debug = STATE.debug or value


def common(*, json_output: bool = True, db: bool = True) -> Callable[[F], F]:
    """The options every command takes (after its name, where people put them)."""

    def decorate(fn: F) -> F:
        fn = click.option(
            "--debug", is_flag=True, expose_value=False, callback=_set_debug,
            help="On an error, print the traceback too.",
        )(fn)
        if json_output:
            fn = click.option(
                "--json", "json_", is_flag=True, expose_value=False, callback=_set_json,
                help="Print one JSON document on stdout, nothing else.",
            )(fn)
        if db:
            fn = click.option(
                "--db", metavar="URL", envvar="TIMEBANK_DATABASE_URL", expose_value=False,
                callback=_set_db, show_envvar=True,
                help="Database URL or SQLite file [default: ./timebank.db].",
            )(fn)
        return fn

    return decorate


def run(argv: list[str]) -> int:
    """Run the root group on ``argv``; every error becomes one line on stderr and its code."""
    # The command modules import this one: they are loaded when the command runs.
    from timebank.cli._commands import root  # noqa: PLC0415

    STATE.reset()
    try:
        root.main(args=argv, prog_name="timebank", standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.Abort:
        click.echo("timebank: aborted", err=True)
        return EXIT_USAGE
    except click.ClickException as usage:
        if "--json" in argv:  # scripts get the same one-line JSON error as for any other
            document = {"error": {"type": type(usage).__name__, "family": "usage",
                                  "message": usage.format_message(),
                                  "exit_code": usage.exit_code}}
            click.echo(json.dumps(document, ensure_ascii=False), err=True)
        else:
            usage.show()
        return usage.exit_code
    except KeyboardInterrupt:
        click.echo("timebank: interrupted", err=True)
        return 130
    except Exception as error:  # noqa: BLE001 - the one place every error is reported
        return report(error)
    finally:
        STATE.close()  # the banks the command opened, and their connections
    return STATE.exit_code


def report(error: BaseException) -> int:
    """One line on stderr (a JSON object with ``--json``) and the family's exit code."""
    code, family = EXIT_INTERNAL, "internal"
    for kind, number, name in FAMILIES:
        if isinstance(error, kind):
            code, family = number, name
            break
    message = _message(error)
    if STATE.debug:
        traceback.print_exception(error, file=sys.stderr)
    if STATE.json:
        document = {"error": {"type": type(error).__name__, "family": family,
                              "message": message, "exit_code": code}}
        click.echo(json.dumps(document, ensure_ascii=False), err=True)
    else:
        hint = "" if STATE.debug or code != EXIT_INTERNAL else " (run with --debug for details)"
        click.echo(f"timebank: {family}: {type(error).__name__}: {message}{hint}", err=True)
    return code


def _message(error: BaseException) -> str:
    if isinstance(error, sa_exc.DBAPIError):
        # The driver's own message, without SQLAlchemy's statement and parameters.
        text = f"database unavailable or failing: {error.orig}"
    else:
        text = str(error)
    return " ".join(text.split()) or type(error).__name__  # one line
