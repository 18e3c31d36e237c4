"""Schema migrations with Alembic. The Alembic environment is ``migrations/`` at the
repository root and travels inside the wheel as ``timebank/_migrations``.

Alembic is imported only to migrate. Opening a ledger checks the schema by reading the
``alembic_version`` row against :data:`HEAD_REVISION`; loading Alembic and its script
directory for that took a fifth of ``import timebank`` and of every CLI command's start.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Final

from sqlalchemy import Engine, inspect, text

from timebank import errors

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "HEAD_REVISION",
    "current_revision",
    "head_revision",
    "is_empty",
    "require_current",
    "upgrade",
]

#: The schema revision this version of the library needs: the head of ``migrations/``.
#: ``tests/test_migrations.py`` checks it against Alembic's head, so a new migration that
#: forgets to move it fails there.
HEAD_REVISION: Final = "0016"

#: Alembic's own table (its default name, which ``migrations/env.py`` keeps).
_VERSION_TABLE: Final = "alembic_version"


def _script_location() -> Path:
    packaged = Path(str(resources.files("timebank"))) / "_migrations"
    if (packaged / "env.py").is_file():
        return packaged
    source = Path(__file__).resolve().parent.parent / "migrations"
    if (source / "env.py").is_file():
        return source
    raise errors.SchemaError("timebank's migrations are missing from this installation")


def _config(engine: Engine | None = None) -> Config:
    from alembic.config import Config  # noqa: PLC0415 - only migrating needs Alembic

    config = Config()
    config.set_main_option("script_location", str(_script_location()))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    """The revision this version of the library needs."""
    return HEAD_REVISION


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when it was never migrated (or was
    migrated down to nothing)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(_VERSION_TABLE):
            return None
        found = list(conn.execute(text(f"SELECT version_num FROM {_VERSION_TABLE}")).scalars())
    if len(found) > 1:  # timebank's migrations have one head; someone else's branch does not
        raise errors.SchemaError(
            f"the database {engine.url.render_as_string(hide_password=True)} is at several "
            f"schema revisions at once ({', '.join(sorted(found))}); timebank has one line"
        )
    return found[0] if found else None


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (the latest by default).

    Refused before anything runs: a revision this timebank does not have
    (InvalidInputError), and a database recorded at a revision it does not know, migrated
    by a newer timebank (SchemaError)."""
    from alembic import command  # noqa: PLC0415 - only migrating needs Alembic
    from alembic.script import ScriptDirectory  # noqa: PLC0415
    from alembic.util import CommandError  # noqa: PLC0415

    config = _config(engine)
    script = ScriptDirectory.from_config(config)
    try:
        script.get_revisions(revision)
    except CommandError as exc:
        raise errors.InvalidInputError(f"cannot upgrade to {revision!r}: {exc}") from exc
    current = current_revision(engine)
    if current is not None:
        try:
            script.get_revisions(current)
        except CommandError as exc:
            raise errors.SchemaError(
                f"the database {engine.url.render_as_string(hide_password=True)} is at schema "
                f"revision {current}, which this timebank ({HEAD_REVISION}) does not know: a "
                "newer timebank migrated it"
            ) from exc
    command.upgrade(config, revision)


def is_empty(engine: Engine) -> bool:
    """No tables at all: a new database that may be created from scratch."""
    return not inspect(engine).get_table_names()


def require_current(engine: Engine) -> None:
    """Raise SchemaError, naming the fix, unless the database is at the head revision."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    if current is None:
        problem = "has no timebank schema"
    else:
        problem = f"is at schema revision {current}, this timebank needs {head}"
    raise errors.SchemaError(
        f"the database {engine.url.render_as_string(hide_password=True)} {problem}. "
        "Fix: run timebank.upgrade(engine), or `timebank db upgrade --db URL`"
    )
