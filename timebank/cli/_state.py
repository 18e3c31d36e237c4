"""What one run of the command knows: the database, the output mode, the open bank."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import click
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from timebank import errors, migrate
from timebank._db import make_engine
from timebank.bank import TimeBank
from timebank.ledger import Ledger

#: The SQLite file used when neither --db nor TIMEBANK_DATABASE_URL names a database.
DEFAULT_DB = "timebank.db"

IDENTITY_SECRET_ENV = "TIMEBANK_IDENTITY_SECRET"
IDENTITY_SECRET_FILE_ENV = "TIMEBANK_IDENTITY_SECRET_FILE"


def as_url(db: str) -> str:
    """A database URL from ``--db``: a URL as given, anything else a path to an SQLite file."""
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).expanduser().resolve()}"


@dataclass
class State:
    db: str = DEFAULT_DB
    json: bool = False
    debug: bool = False
    exit_code: int = 0
    banks: list[TimeBank] = field(default_factory=list)

    def reset(self) -> None:
        self.close()
        self.db, self.json, self.debug, self.exit_code = DEFAULT_DB, False, False, 0

    @property
    def url(self) -> str:
        return as_url(self.db)

    def parsed(self) -> URL:
        try:
            return make_url(self.url)
        except (sa_exc.ArgumentError, ValueError) as error:
            raise click.BadParameter(f"not a database URL: {error}", param_hint="--db") from None

    def shown_url(self) -> str:
        """The URL without its password, for messages."""
        return self.parsed().render_as_string(hide_password=True)

    def engine(self) -> Engine:
        """An engine on ``--db`` with the library's settings; a URL naming a dialect or a
        driver this installation lacks is refused before anything is created."""
        try:
            return make_engine(self.url)
        except ModuleNotFoundError as missing:
            raise errors.StorageError(
                f"the database driver {missing.name!r} is not installed: "
                "pip install 'timebank[postgres]' (PostgreSQL) or 'timebank[mysql]' (MariaDB)"
            ) from None
        except (sa_exc.ArgumentError, ValueError) as error:
            raise click.BadParameter(f"not a database URL: {error}", param_hint="--db") from None

    def bank(self, *, programme: str | None = None) -> TimeBank:
        """The time bank at ``--db``, which must exist at this version's schema. With
        ``programme``, the identity secret (from the environment) is keyed to it."""
        self.require_database()
        engine = self.engine()
        try:
            ledger = Ledger(engine)
        except BaseException:
            engine.dispose()
            raise
        secrets = {programme: identity_secret()} if programme is not None else {}
        bank = TimeBank(ledger, identity_secrets=secrets)
        self.banks.append(bank)
        return bank

    def require_database(self) -> None:
        """A missing SQLite file is reported, never created by a command that only reads or
        acts: only ``db upgrade`` (and ``demo``/``simulate``) create databases."""
        parsed = self.parsed()
        if parsed.get_backend_name() != "sqlite":
            return
        path = parsed.database or ""
        if path in ("", ":memory:") or path.startswith("file:"):
            return
        if Path(path).is_file() and Path(path).stat().st_size > 0:
            return
        raise errors.SchemaError(
            f"no database at {path}. Fix: create it with `timebank db upgrade --db {path}`"
        )

    def close(self) -> None:
        while self.banks:
            self.banks.pop().dispose()


def identity_secret() -> bytes:
    """The secret that keys members' identity hashes: the file named by
    TIMEBANK_IDENTITY_SECRET_FILE, or TIMEBANK_IDENTITY_SECRET itself. Never an option: it
    would land in the shell's history."""
    path = os.environ.get(IDENTITY_SECRET_FILE_ENV)
    if path:
        try:
            secret = Path(path).read_bytes().strip()
        except OSError as error:
            raise errors.InvalidInputError(
                f"{IDENTITY_SECRET_FILE_ENV}: cannot read {path}: {error.strerror}"
            ) from None
    else:
        secret = os.environ.get(IDENTITY_SECRET_ENV, "").encode()
    if len(secret) < 16:
        raise errors.InvalidInputError(
            f"set {IDENTITY_SECRET_FILE_ENV} (a file) or {IDENTITY_SECRET_ENV} to the "
            "programme's identity secret, at least 16 bytes: it keys members' identity hashes"
        )
    return secret


def database_revision(engine: Engine) -> tuple[str | None, str]:
    """(the database's schema revision, the one this version needs); disposes ``engine``."""
    try:
        return migrate.current_revision(engine), migrate.head_revision()
    finally:
        engine.dispose()


STATE = State()
