"""Fresh, throw-away test databases on SQLite, PostgreSQL and MariaDB.

The fixtures themselves live in ``tests/conftest.py``; this module holds the logic.

Configuration (environment variables)
-------------------------------------
``TIMEBANK_TEST_POSTGRES_URL``
    SQLAlchemy URL of a PostgreSQL server database the tests may use as an admin
    connection, e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/test``. The user must
    be allowed to ``CREATE DATABASE``.
``TIMEBANK_TEST_MARIADB_URL``
    Likewise for MariaDB, e.g. ``mysql+pymysql://root@127.0.0.1:3306/test``.
``TIMEBANK_REQUIRE_DATABASES=1``
    Turn every "backend not configured" / "server unreachable" skip into a test
    failure, so CI cannot pass green while silently skipping a backend.

SQLite needs no configuration: each database is a new file under the test's
``tmp_path``.

Freshness
---------
Every call of :meth:`FreshDatabases.create` makes a new, empty database and returns its
URL as a string (password included, so it can be passed straight to
``create_engine``):

* SQLite: a new file ``tb_<random>.db`` in the test's ``tmp_path``.
* PostgreSQL: ``CREATE DATABASE tb_<random>`` over an AUTOCOMMIT connection to the
  configured database; dropped at teardown with ``DROP DATABASE ... WITH (FORCE)``, so
  connections a test forgot to close do not block the drop.
* MariaDB: ``CREATE DATABASE tb_<random>``; at teardown the connections still using it
  are killed (MariaDB's analogue of ``WITH (FORCE)``: an open transaction would
  otherwise hold a metadata lock and make the drop hang) and it is dropped.

Selecting backends in a test module
-----------------------------------
``db_url`` (from conftest) runs a test once per backend: ids ``sqlite``, ``postgres``,
``mariadb``; the latter two carry the ``postgres`` / ``mariadb`` markers, so
``pytest -m "not mariadb"`` deselects them. To restrict a whole module, override the
fixture at module level::

    from tests._databases import backends

    db_url = backends("sqlite", "postgres")  # this module's tests skip MariaDB

``backends(..., name="other_url")`` defines a differently named fixture instead, for
a module that wants both.

Migrated databases
------------------
``create(backend, migrated=True)`` (and ``backends(..., migrated=True)``) gives a new
database already at the schema's head instead of an empty one, for the many tests whose
first step would migrate it: migrating costs about a second on a server under the suite's
load, copying a migrated template a fraction of that. Each test process migrates one
template per backend, once, and copies it: SQLite copies the file; PostgreSQL creates the
database ``TEMPLATE`` it; MariaDB, which has no templates, replays the template's own
``SHOW CREATE TABLE`` and ``SHOW CREATE TRIGGER`` statements and copies the rows of the
tables migrations fill. ``tests/test_infra.py`` checks each copy equals a database
migrated the ordinary way. Tests about migrating itself take empty databases.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NoReturn, Protocol

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.pool import NullPool

from timebank.testing.world import copy_sqlite

POSTGRES_URL_ENV: Final = "TIMEBANK_TEST_POSTGRES_URL"
MARIADB_URL_ENV: Final = "TIMEBANK_TEST_MARIADB_URL"
REQUIRE_DATABASES_ENV: Final = "TIMEBANK_REQUIRE_DATABASES"

SQLITE: Final = "sqlite"
POSTGRES: Final = "postgres"
MARIADB: Final = "mariadb"
BACKENDS: Final = (SQLITE, POSTGRES, MARIADB)

# Which env var configures each server backend, and which SQLAlchemy dialect it must use.
_SERVER_ENV: Final = {POSTGRES: POSTGRES_URL_ENV, MARIADB: MARIADB_URL_ENV}
_SERVER_DIALECTS: Final = {POSTGRES: ("postgresql",), MARIADB: ("mysql", "mariadb")}
_EXAMPLE_URL: Final = {
    POSTGRES: "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    MARIADB: "mysql+pymysql://root@127.0.0.1:3306/test",
}

# Keep an unreachable server from costing a connect timeout in every single test:
# the first failure is remembered for the rest of the session.
_unreachable: dict[str, str] = {}


def databases_required() -> bool:
    """True when ``TIMEBANK_REQUIRE_DATABASES`` asks for failures instead of skips."""
    return os.environ.get(REQUIRE_DATABASES_ENV, "").strip().lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> NoReturn:
    """Skip the current test, or fail it when databases are required."""
    if databases_required():
        pytest.fail(f"{reason} ({REQUIRE_DATABASES_ENV}=1, so this is a failure)", pytrace=False)
    pytest.skip(reason)


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown test backend {backend!r}; expected one of {BACKENDS}")


def server_url(backend: str) -> URL:
    """The configured admin URL for a server backend, or skip/fail if it is not set."""
    env = _SERVER_ENV[backend]
    raw = os.environ.get(env, "").strip()
    if not raw:
        unavailable(f"{backend} tests need {env} (e.g. {env}={_EXAMPLE_URL[backend]})")
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        # A malformed URL is a configuration error, never a reason to skip.
        pytest.fail(f"{env} is not a valid SQLAlchemy URL: {exc}", pytrace=False)
    if url.get_backend_name() not in _SERVER_DIALECTS[backend]:
        pytest.fail(
            f"{env} must be a {'/'.join(_SERVER_DIALECTS[backend])} URL, "
            f"got {url.render_as_string(hide_password=True)}",
            pytrace=False,
        )
    if not url.database:
        pytest.fail(f"{env} must name a database to connect to (e.g. .../test)", pytrace=False)
    return url


def _admin_engine(backend: str, url: URL) -> sa.Engine:
    # NullPool: nothing stays open between our admin statements; AUTOCOMMIT because
    # CREATE/DROP DATABASE cannot run inside a transaction on PostgreSQL.
    return sa.create_engine(
        url,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 10},
    )


@contextlib.contextmanager
def _admin_connection(backend: str, url: URL) -> Iterator[Connection]:
    """An AUTOCOMMIT connection to the configured server; skip/fail if unreachable."""
    shown = url.render_as_string(hide_password=True)
    env = _SERVER_ENV[backend]
    if backend in _unreachable:
        unavailable(_unreachable[backend])
    try:
        engine = _admin_engine(backend, url)
    except (ImportError, NoSuchModuleError) as exc:
        pytest.fail(f"{env}: cannot load the driver for {shown}: {exc}", pytrace=False)
    try:
        try:
            conn = engine.connect()
        except DBAPIError as exc:
            first_line = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            _unreachable[backend] = f"cannot connect to {backend} at {shown} ({env}): {first_line}"
            unavailable(_unreachable[backend])
        with conn:
            yield conn
    finally:
        engine.dispose()


def _create_server_database(backend: str, url: URL, name: str) -> None:
    with _admin_connection(backend, url) as conn:
        quoted = conn.dialect.identifier_preparer.quote(name)
        if backend == POSTGRES:
            conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
        else:
            conn.exec_driver_sql(f"CREATE DATABASE {quoted} CHARACTER SET utf8mb4")


def _drop_server_database(backend: str, url: URL, name: str) -> None:
    with _admin_connection(backend, url) as conn:
        quoted = conn.dialect.identifier_preparer.quote(name)
        if backend == POSTGRES:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
            return
        leftovers = conn.execute(
            sa.text(
                "SELECT id FROM information_schema.processlist "
                "WHERE db = :name AND id <> CONNECTION_ID()"
            ),
            {"name": name},
        ).scalars()
        for connection_id in leftovers.all():
            # The connection may end on its own between the SELECT and the KILL.
            with contextlib.suppress(DBAPIError):
                conn.exec_driver_sql(f"KILL CONNECTION {int(connection_id)}")
        _drop_mariadb_database(conn, quoted)


#: MariaDB's "Error dropping database (can't rmdir ...)": a file the server does not know
#: is left in the database's directory (seen: ``tb_entries.TRG-``, a trigger file half
#: written by a connection killed above).
_MARIADB_CANT_RMDIR: Final = 1010


class LeftDatabaseWarning(UserWarning):
    """A throw-away MariaDB database the server could not drop (shown, not an error:
    ``pyproject.toml`` lets this category through its ``filterwarnings = error``)."""


def _drop_mariadb_database(conn: Connection, quoted: str) -> None:
    """DROP DATABASE, tried again while a killed connection may still be winding down; if
    the server still cannot remove the directory, warn and leave it: a throw-away database
    of a random name that the server itself failed to remove is not the test's failure."""
    for attempt in range(3):
        try:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted}")
            return
        except DBAPIError as exc:
            code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
            if code != _MARIADB_CANT_RMDIR:
                raise
            if attempt == 2:
                warnings.warn(
                    f"MariaDB could not remove the directory of test database {quoted} "
                    f"(a file it does not know is left there): {exc.orig}",
                    LeftDatabaseWarning,
                    stacklevel=2,
                )
                return
            time.sleep(1.0)


def _render(url: URL) -> str:
    # str(URL) masks the password as "***"; callers need a URL they can connect with.
    return url.render_as_string(hide_password=False)


class UrlFactory(Protocol):
    """``fresh_db_url_factory``: a new database's URL on a backend, empty or migrated."""

    def __call__(self, backend: str, *, migrated: bool = False) -> str: ...


@dataclass
class MariaDBScript:
    """What makes a copy of a MariaDB database (MariaDB has no template databases): its
    tables' statements, the tables holding rows, and its triggers' statements with the
    sql_mode each was made in."""

    tables: list[str]
    filled: list[str]
    triggers: list[tuple[str, str]]


def mariadb_script(url: URL) -> MariaDBScript:
    """How to copy the MariaDB database at ``url`` (see :func:`copy_mariadb`)."""
    engine = _admin_engine(MARIADB, url)
    try:
        with engine.connect() as conn:
            return _mariadb_script(conn)
    finally:
        engine.dispose()


def _mariadb_script(conn: Connection) -> MariaDBScript:
    names = conn.exec_driver_sql(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY table_name"
    ).scalars().all()
    tables = [conn.exec_driver_sql(f"SHOW CREATE TABLE `{n}`").one()[1] for n in names]
    filled = [n for n in names if conn.exec_driver_sql(f"SELECT 1 FROM `{n}` LIMIT 1").first()]
    # Triggers of one table and event fire in the order they were created.
    triggers = conn.exec_driver_sql(
        "SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema = DATABASE() "
        "ORDER BY event_object_table, action_timing, event_manipulation, action_order"
    ).scalars().all()
    made = []
    for trigger in triggers:
        row = conn.exec_driver_sql(f"SHOW CREATE TRIGGER `{trigger}`").one()._mapping
        made.append((str(row["sql_mode"]), str(row["SQL Original Statement"])))
    return MariaDBScript(list(tables), filled, made)


def copy_mariadb(url: URL, template: str, script: MariaDBScript) -> None:
    """Make the empty MariaDB database at ``url`` what ``template`` (on the same server, its
    ``script``) is: its tables, then their rows, then the triggers (which may refuse the
    rows' writes)."""
    engine = _admin_engine(MARIADB, url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET SESSION foreign_key_checks = 0")
            for statement in script.tables:
                conn.exec_driver_sql(statement)
            for table in script.filled:
                conn.exec_driver_sql(f"INSERT INTO `{table}` SELECT * FROM `{template}`.`{table}`")
            for sql_mode, statement in script.triggers:
                conn.execute(sa.text("SET SESSION sql_mode = :mode"), {"mode": sql_mode})
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


@dataclass
class Templates:
    """One migrated database per backend for this test process, copied on request; see
    "Migrated databases" above."""

    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tb_templates_")))
    made: dict[str, str] = field(default_factory=dict)
    mariadb: MariaDBScript | None = None
    _cleanup: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def template(self, backend: str) -> str:
        """The template's name (its file, on SQLite), migrated the first time it is asked."""
        if backend not in self.made:
            self.made[backend] = self._migrate(backend)
        return self.made[backend]

    def _migrate(self, backend: str) -> str:
        from timebank import Ledger  # noqa: PLC0415 - only the suite's copies need it

        if backend == SQLITE:
            path = self.folder / "template.db"
            Ledger.open(f"sqlite:///{path}").dispose()
            return str(path)
        admin_url = server_url(backend)
        name = f"tb_template_{secrets.token_hex(6)}"
        _create_server_database(backend, admin_url, name)
        self._cleanup.callback(_drop_server_database, backend, admin_url, name)
        Ledger.open(_render(admin_url.set(database=name))).dispose()
        if backend == MARIADB:
            self.mariadb = mariadb_script(admin_url.set(database=name))
        return name

    def copy_mariadb(self, admin_url: URL, name: str) -> None:
        """Fill the new, empty database ``name`` as the template is."""
        template, script = self.template(MARIADB), self.mariadb
        assert script is not None
        copy_mariadb(admin_url.set(database=name), template, script)

    def close(self) -> None:
        try:
            self._cleanup.close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


class FreshDatabases:
    """Creates fresh databases for one test and removes them in :meth:`close`."""

    def __init__(self, tmp_path: Path, templates: Templates | None = None) -> None:
        self._tmp_path = tmp_path
        self._templates = templates if templates is not None else Templates()
        self._cleanup = contextlib.ExitStack()
        if templates is None:  # this object's own templates go with it
            self._cleanup.callback(self._templates.close)

    def create(self, backend: str, *, migrated: bool = False) -> str:
        """A URL to a new database on ``backend``, empty or, with ``migrated``, at the
        schema's head (skips/fails if the backend is unavailable)."""
        _check_backend(backend)
        name = f"tb_{secrets.token_hex(6)}"
        if backend == SQLITE:
            path = self._tmp_path / f"{name}.db"
            if migrated:
                copy_sqlite(self._templates.template(SQLITE), path)
            return f"sqlite:///{path}"
        admin_url = server_url(backend)
        template = self._templates.template(backend) if migrated else None
        if backend == POSTGRES and template is not None:
            with _admin_connection(backend, admin_url) as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            _create_server_database(backend, admin_url, name)
        self._cleanup.callback(_drop_server_database, backend, admin_url, name)
        if backend == MARIADB and template is not None:
            self._templates.copy_mariadb(admin_url, name)
        return _render(admin_url.set(database=name))

    def close(self) -> None:
        """Drop every server database created so far (newest first)."""
        self._cleanup.close()


def backend_of(url: str | URL) -> str:
    """The test backend name (``sqlite``/``postgres``/``mariadb``) for a database URL."""
    name = make_url(url).get_backend_name()
    for backend, dialects in _SERVER_DIALECTS.items():
        if name in dialects:
            return backend
    if name == SQLITE:
        return SQLITE
    raise ValueError(f"not a timebank test backend: {name}")


def backend_params(*names: str) -> list[object]:
    """``pytest.param`` entries for ``names``, with ids and ``postgres``/``mariadb`` marks."""
    if not names:
        raise ValueError("name at least one backend")
    params: list[object] = []
    for backend in names:
        _check_backend(backend)
        marks = [] if backend == SQLITE else [getattr(pytest.mark, backend)]
        params.append(pytest.param(backend, id=backend, marks=marks))
    return params


def backends(*names: str, name: str = "db_url", migrated: bool = False) -> object:
    """A fixture ``name`` (default ``db_url``) giving a fresh database URL on each backend,
    empty or, with ``migrated``, at the schema's head.

    Assign the result to a module-level variable to define (or override) the fixture for
    that module: ``db_url = backends("sqlite", "postgres")``.
    """

    @pytest.fixture(name=name, params=backend_params(*names))
    def _fresh_url(request: pytest.FixtureRequest, fresh_db_url_factory: UrlFactory) -> str:
        backend: str = request.param
        return fresh_db_url_factory(backend, migrated=migrated)

    return _fresh_url
