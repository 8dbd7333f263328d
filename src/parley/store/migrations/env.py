"""Alembic's environment for Parley.

``parley.store.migrate()`` passes its own connection, already inside a transaction
(and, on PostgreSQL, holding the migration lock), in ``config.attributes``. The
alembic command line, given a config with ``sqlalchemy.url`` (see
``parley.store.alembic_config``), gets a fresh async engine instead.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from parley.store.engine import make_engine, writer_engine
from parley.store.schema import include_name, metadata

config = context.config


def _configure(connection: Connection) -> None:
    # render_as_batch: SQLite cannot ALTER most things; batch mode copies the table.
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
        include_name=include_name,
    )


def _run(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_on_new_engine(url: str) -> None:
    engine = make_engine(url, pool_size=1)
    try:
        async with writer_engine(engine).connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def main() -> None:
    """Run the migrations in the mode alembic asked for."""
    if context.is_offline_mode():
        context.configure(
            url=config.get_main_option("sqlalchemy.url"),
            target_metadata=metadata,
            literal_binds=True,
            render_as_batch=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url, or call parley.store.migrate(url)")
    asyncio.run(_run_on_new_engine(url))


main()
