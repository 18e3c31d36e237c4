"""Database fixtures shared by the whole test suite.

Fixtures (all function-scoped; every URL is a string ready for ``create_engine``):

``fresh_db_url_factory``
    ``factory(backend) -> url``: each call creates another new, empty database on
    ``"sqlite"``, ``"postgres"`` or ``"mariadb"``; all of them are dropped after the test.
    ``factory(backend, migrated=True)``: a new database already at the schema's head, a
    copy of one migrated once per test process (``backends(..., migrated=True)`` likewise).
``sqlite_url`` / ``postgres_url`` / ``mariadb_url``
    One fresh empty database on that backend.
``db_url``
    Parametrized over ``sqlite``, ``postgres``, ``mariadb`` (test ids), the last two
    marked ``postgres`` / ``mariadb``. A module restricts the backends by overriding it:
    ``db_url = backends("sqlite", "postgres")`` (``from tests._databases import backends``).
``db_backend``
    The backend name of the current ``db_url`` (``"sqlite"``, ``"postgres"``, ``"mariadb"``).

PostgreSQL and MariaDB are configured with ``TIMEBANK_TEST_POSTGRES_URL`` and
``TIMEBANK_TEST_MARIADB_URL``; without them those tests are skipped, unless
``TIMEBANK_REQUIRE_DATABASES=1`` turns the skip into a failure. See ``tests/_databases.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._databases import (
    MARIADB,
    POSTGRES,
    SQLITE,
    FreshDatabases,
    Templates,
    UrlFactory,
    backend_of,
    backends,
)
from timebank.bank import _io_api


@pytest.fixture(scope="session")
def database_templates() -> Iterator[Templates]:
    """The migrated databases this test process copies (made when first asked for)."""
    templates = Templates()
    try:
        yield templates
    finally:
        templates.close()


@pytest.fixture
def fresh_db_url_factory(tmp_path: Path, database_templates: Templates) -> Iterator[UrlFactory]:
    databases = FreshDatabases(tmp_path, database_templates)
    try:
        yield databases.create
    finally:
        databases.close()


@pytest.fixture
def sqlite_url(fresh_db_url_factory: UrlFactory) -> str:
    return fresh_db_url_factory(SQLITE)


@pytest.fixture
def postgres_url(fresh_db_url_factory: UrlFactory) -> str:
    return fresh_db_url_factory(POSTGRES)


@pytest.fixture
def mariadb_url(fresh_db_url_factory: UrlFactory) -> str:
    return fresh_db_url_factory(MARIADB)


db_url = backends(SQLITE, POSTGRES, MARIADB)


@pytest.fixture
def db_backend(db_url: str) -> str:
    return backend_of(db_url)


@pytest.fixture(params=("memory", "set"))
def bulk_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each engine of ``method="bulk"`` in turn as the one imports run."""
    monkeypatch.setattr(_io_api, "BULK_ENGINE", request.param)
    return str(request.param)
