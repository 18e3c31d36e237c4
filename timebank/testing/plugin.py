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
    database is created from a template database (``timebank_template_...``) migrated once
    per test session (per xdist worker and server) and dropped when the session ends.
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
    (PostgreSQL copies only a database nobody is connected to)."""
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
    from timebank.testing.world import copy_sqlite

    target = tmp_path / "timebank.db"
    copy_sqlite(_timebank_sqlite_template, target)
    bank = _open(f"sqlite:///{target}", timebank_clock)
    try:
        yield bank
    finally:
        bank.dispose()


@contextlib.contextmanager
def _fresh_postgres_database(
    server: str, template: str | None = None, *, prefix: str = "timebank_"
) -> Iterator[str]:
    """A new database on the server at ``server`` (a copy of database ``template`` if one
    is named), its name ``prefix`` and random letters, dropped (connections forced) at
    exit."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    url = make_url(server)
    if url.get_backend_name() != "postgresql":
        pytest.fail(f"{POSTGRES_URL_ENV} must be a postgresql URL", pytrace=False)
    name = f"{prefix}{secrets.token_hex(6)}"
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
def _timebank_postgres_templates() -> Iterator[Callable[[str], str]]:
    """The name of a database at the schema's head on a server: made the first time a test
    asks for that server, copied for each test, dropped when the session ends."""
    from sqlalchemy.engine import make_url

    made: dict[str, str] = {}
    with contextlib.ExitStack() as made_here:

        def template(server: str) -> str:
            if server not in made:
                url = made_here.enter_context(
                    _fresh_postgres_database(server, prefix="timebank_template_")
                )
                _migrate(url)
                made[server] = str(make_url(url).database)
            return made[server]

        yield template


@pytest.fixture
def timebank_postgres(
    timebank_clock: ManualClock, _timebank_postgres_templates: Callable[[str], str]
) -> Iterator[TimeBank]:
    server = _postgres_server()
    with _fresh_postgres_database(server, _timebank_postgres_templates(server)) as url:
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
