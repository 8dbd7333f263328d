"""Database URLs: drivers filled in, and libpq's multi-host form turned into the one
SQLAlchemy's asyncpg dialect reads, down to the keyword arguments asyncpg receives;
the read replicas' list."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

from parley.settings import Settings
from parley.store import SqlStore
from parley.store.engine import normalize_url


def connect_kwargs(url: str) -> dict[str, Any]:
    _, kwargs = PGDialect_asyncpg().create_connect_args(normalize_url(url))
    return dict(kwargs)


def test_single_host_url_is_left_alone_but_for_the_driver() -> None:
    url = normalize_url("postgres://u:p@db.example:6432/chat?ssl=require")
    assert url.drivername == "postgresql+asyncpg"
    assert (url.host, url.port, url.database) == ("db.example", 6432, "chat")
    assert connect_kwargs("postgresql://u@h/chat")["host"] == "h"


def test_multi_host_url_reaches_asyncpg_as_host_and_port_lists() -> None:
    kwargs = connect_kwargs(
        "postgresql://parley:s%40cret@pg1:5432,pg2:5433/chat?target_session_attrs=read-write"
    )
    assert kwargs == {
        "user": "parley",
        "password": "s@cret",
        "database": "chat",
        "host": ["pg1", "pg2"],
        "port": [5432, 5433],
        "target_session_attrs": "read-write",
    }


def test_multi_host_url_fills_in_the_default_port() -> None:
    kwargs = connect_kwargs("postgres://u@10.0.0.1,10.0.0.2:5433")
    assert kwargs["host"] == ["10.0.0.1", "10.0.0.2"]
    assert kwargs["port"] == [5432, 5433]
    assert "database" not in kwargs


def test_multi_host_url_keeps_every_query_parameter() -> None:
    kwargs = connect_kwargs("postgresql://u@a:1,b:2/d?ssl=require&target_session_attrs=primary")
    assert kwargs["ssl"] == "require"
    assert kwargs["target_session_attrs"] == "primary"


def test_dialects_own_multi_host_form_passes_through() -> None:
    kwargs = connect_kwargs("postgresql://u@/d?host=a:1&host=b:2")
    assert (kwargs["host"], kwargs["port"]) == (["a", "b"], [1, 2])


@pytest.mark.parametrize(
    "url",
    ["postgresql://u@[::1]:5432,[::2]:5432/d", "postgresql://u@a:x,b:1/d", "postgresql://u@a,,b/d"],
)
def test_unreadable_multi_host_url_is_refused_clearly(url: str) -> None:
    with pytest.raises(ValueError, match="multi-host database URL"):
        normalize_url(url)


def test_sqlite_url_with_a_comma_is_not_a_host_list() -> None:
    url = normalize_url("sqlite:////tmp/a,b.db")
    assert url.drivername == "sqlite+aiosqlite"
    assert url.database == "/tmp/a,b.db"


def test_replica_list_splits_between_urls_not_inside_a_multi_host_one() -> None:
    settings = Settings(
        database_replica_urls=(
            "postgresql://u@r1/db, postgresql://u@r2:5432,r3:5433/db?x=1,postgres://u@r4/db"
        )
    )
    assert settings.replica_urls == [
        "postgresql://u@r1/db",
        "postgresql://u@r2:5432,r3:5433/db?x=1",
        "postgres://u@r4/db",
    ]
    assert Settings().replica_urls == []


@pytest.mark.parametrize(
    ("primary", "replica"),
    [("sqlite:////tmp/x.db", "postgresql://u@r/db"), ("postgresql://u@p/db", "sqlite:///r.db")],
)
def test_read_replicas_need_postgresql_on_both_sides(primary: str, replica: str) -> None:
    with pytest.raises(ValueError, match="read replicas need PostgreSQL"):
        SqlStore(primary, replica_urls=[replica])
