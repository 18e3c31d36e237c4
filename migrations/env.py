"""Alembic environment of timebank: works on SQLite (batch mode), PostgreSQL and MariaDB.

Revisions never import the live models; only this file does, for autogenerate comparisons.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, create_engine

import timebank.bank.schema  # noqa: F401  (registers the time-bank tables in the metadata)
from timebank.schema import include_object_for, metadata

config = context.config


def _engine() -> Engine:
    engine = config.attributes.get("engine")
    if isinstance(engine, Engine):
        return engine
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("pass an engine in config.attributes['engine'] or sqlalchemy.url")
    return create_engine(url)


def run_migrations_online() -> None:
    engine = _engine()
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            include_object=include_object_for(connection.dialect.name),
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise RuntimeError("timebank migrations run online only: call timebank.upgrade(engine)")
run_migrations_online()
