"""Schema migrations with Alembic. The Alembic environment is ``migrations/`` at the
repository root and travels inside the wheel as ``timebank/_migrations``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from timebank import errors

__all__ = ["current_revision", "head_revision", "is_empty", "require_current", "upgrade"]


def _script_location() -> Path:
    packaged = Path(str(resources.files("timebank"))) / "_migrations"
    if (packaged / "env.py").is_file():
        return packaged
    source = Path(__file__).resolve().parent.parent / "migrations"
    if (source / "env.py").is_file():
        return source
    raise errors.SchemaError("timebank's migrations are missing from this installation")


def _config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_script_location()))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    """The revision this version of the library needs."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the migrations have one head"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (the latest by default)."""
    command.upgrade(_config(engine), revision)


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
