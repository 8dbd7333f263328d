"""Schema migrations (Alembic), run in code: no ``alembic.ini`` is needed on disk.

``migrate(url)`` upgrades a database to the newest revision. It is safe to call at
every start-up and from several nodes at once: on PostgreSQL the nodes queue on an
advisory lock and all but the first find nothing to do; on SQLite ``BEGIN
IMMEDIATE`` does the same. The whole upgrade is one transaction (both databases have
transactional DDL), so a failed upgrade leaves the previous schema intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from parley.errors import Unavailable
from parley.store.engine import make_engine, normalize_url, prepare_sqlite_path, writer_engine

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["alembic_config", "migrate"]

SCRIPT_LOCATION = Path(__file__).resolve().parent
# pg_advisory_xact_lock key that serialises migrations across nodes: "parley" in ASCII.
MIGRATION_LOCK_KEY = 0x7061726C6579


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations, for ``alembic`` commands
    run from code (``alembic.command.revision(alembic_config(url), ...)``)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to the newest schema, or to ``revision``
    (creating a SQLite file and its directory if missing). Raises ``Unavailable`` if
    the database cannot be reached."""
    from alembic import command

    parsed = normalize_url(url)
    prepare_sqlite_path(parsed)
    config = alembic_config()
    engine = make_engine(parsed, pool_size=1)

    def upgrade(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    try:
        async with writer_engine(engine).begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
            await conn.run_sync(upgrade)
    except (SQLAlchemyError, OSError) as exc:
        raise Unavailable(f"cannot migrate the database: {exc}") from exc
    finally:
        await engine.dispose()
