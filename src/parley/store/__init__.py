"""The durable store: ``SqlStore`` on SQLite or PostgreSQL, and its migrations.

store = SqlStore("sqlite:///parley-data/parley.db")  # or postgresql://…
await migrate(url)
await store.start()
...
await store.close()
"""

from __future__ import annotations

from parley.store.migrations import alembic_config, migrate
from parley.store.sql import SqlStore, StoreStats

__all__ = ["SqlStore", "StoreStats", "alembic_config", "migrate"]
