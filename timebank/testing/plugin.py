# ruff: noqa: PLC0415 - the time bank is imported lazily, when a fixture is first used
"""pytest fixtures for testing software built on the time bank.

Registered as the ``pytest11`` entry point ``timebank`` (installed with the ``testing``
extra), so the fixtures are there in every test without a conftest. Without the entry point:
``pytest -p timebank.testing.plugin`` or ``pytest_plugins = ["timebank.testing.plugin"]``.

Fixtures (function scope):

``timebank_clock``
    A :class:`~timebank.testing.world.ManualClock` at ``T0`` (2026-11-02 09:00 UTC).
``timebank_sqlite``
    An empty :class:`~timebank.bank.TimeBank` (migrated, no programme) on a new SQLite file
    under ``tmp_path``, on ``timebank_clock``; identity secret ``SECRET`` for programme
    ``"riverside"``. Disposed after the test. The file is a copy of one migrated once per
    test session (per xdist worker): a test does not pay for the migrations.
``timebank_postgres``
    The same on PostgreSQL: a new database created on the server that
    ``TIMEBANK_TEST_POSTGRES_URL`` names (a SQLAlchemy URL whose user may CREATE DATABASE)
    and dropped after the test. Skipped, with the reason, when the variable is not set. The
    database is created from a template database migrated once per test session (per xdist
    worker) and dropped when the session ends.
``timebank_world``
    The world of :func:`~timebank.testing.world.make_world` on SQLite (programme, regions,
    two stations, a care home, operators, members ann, bob, cai, dora).
``timebank_member_factory``
    ``factory(name, **options) -> member id``: registers another member in
    ``timebank_world`` (options of :meth:`World.register`).
``timebank_service_factory``
    ``factory(volunteer, recipient, **options) -> ServiceView``: records (and by default
    confirms) a service ending now in ``timebank_world`` (options of :meth:`World.serve`).

This module imports only pytest at load time: the time bank is imported when a fixture is
first used.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from timebank.bank import ServiceView, TimeBank
    from timebank.testing.world import ManualClock, World

POSTGRES_URL_ENV = "TIMEBANK_TEST_POSTGRES_URL"


@pytest.fixture
def timebank_clock() -> ManualClock:
    from timebank.testing.world import ManualClock

    return ManualClock()


def _open(url: str, clock: ManualClock) -> TimeBank:
    from timebank.bank import TimeBank
    from timebank.testing.world import PROGRAMME, SECRET

    return TimeBank.open(url, identity_secrets={PROGRAMME: SECRET}, clock=clock)


def _migrate(url: str) -> None:
    """Bring the database at ``url`` to the schema's head, and close every connection to it
    (a template is copied whole: SQLite's log folded into the file; PostgreSQL copies only a
    database nobody is connected to)."""
    from timebank import Ledger

    Ledger.open(url).dispose()


@pytest.fixture(scope="session")
def _timebank_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file at the schema's head, made once a session and copied for each test."""
    path = tmp_path_factory.mktemp("timebank_template") / "migrated.db"
    _migrate(f"sqlite:///{path}")
    return path


@pytest.fixture
def timebank_sqlite(
    tmp_path: Path, timebank_clock: ManualClock, _timebank_sqlite_template: Path
) -> Iterator[TimeBank]:
    target = tmp_path / "timebank.db"
    shutil.copyfile(_timebank_sqlite_template, target)
    bank = _open(f"sqlite:///{target}", timebank_clock)
    try:
        yield bank
    finally:
        bank.dispose()


@contextlib.contextmanager
def _fresh_postgres_database(server: str, template: str | None = None) -> Iterator[str]:
    """A new database on the server at ``server`` (a copy of database ``template`` if one
    is named), dropped (connections forced) at exit."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    url = make_url(server)
    if url.get_backend_name() != "postgresql":
        pytest.fail(f"{POSTGRES_URL_ENV} must be a postgresql URL", pytrace=False)
    name = f"timebank_{secrets.token_hex(6)}"
    admin = sa.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        copied = f' TEMPLATE "{template}"' if template else ""
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"{copied}')
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def _postgres_server() -> str:
    server = os.environ.get(POSTGRES_URL_ENV, "").strip()
    if not server:
        pytest.skip(
            f"timebank_postgres needs {POSTGRES_URL_ENV} (a PostgreSQL URL whose user "
            "may CREATE DATABASE)"
        )
    return server


@pytest.fixture(scope="session")
def _timebank_postgres_template() -> Iterator[str]:
    """A database at the schema's head, made once a session, copied for each test and
    dropped when the session ends; its name."""
    from sqlalchemy.engine import make_url

    with _fresh_postgres_database(_postgres_server()) as url:
        _migrate(url)
        database = make_url(url).database
        assert database is not None
        yield database


@pytest.fixture
def timebank_postgres(
    request: pytest.FixtureRequest, timebank_clock: ManualClock
) -> Iterator[TimeBank]:
    server = _postgres_server()  # skipped here, before the template is asked for
    template: str = request.getfixturevalue("_timebank_postgres_template")
    with _fresh_postgres_database(server, template) as url:
        bank = _open(url, timebank_clock)
        try:
            yield bank
        finally:
            bank.dispose()


@pytest.fixture
def timebank_world(tmp_path: Path, timebank_clock: ManualClock) -> Iterator[World]:
    from timebank.testing.world import sqlite_world

    world = sqlite_world(tmp_path / "timebank_world.db", clock=timebank_clock)
    try:
        yield world
    finally:
        world.bank.dispose()


@pytest.fixture
def timebank_member_factory(timebank_world: World) -> Callable[..., int]:
    def register(name: str, **options: Any) -> int:
        return timebank_world.register(name, **options)

    return register


@pytest.fixture
def timebank_service_factory(timebank_world: World) -> Callable[..., ServiceView]:
    def serve(volunteer: str, recipient: str, **options: Any) -> ServiceView:
        return timebank_world.serve(volunteer, recipient, **options)

    return serve
