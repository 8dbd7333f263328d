"""PostgreSQL goes away and comes back (a restart, a network cut: here a TCP proxy
in front of it closes every connection): the store's kept-open connections are
stale, and the first read and write after it is back must succeed all the same."""

from __future__ import annotations

import uuid

from parley.store import SqlStore, migrate
from parley.testing.proxy import TcpProxy


async def test_reads_and_writes_succeed_at_once_after_the_database_is_back(
    postgres_url: str,
) -> None:
    host_port, _, database = postgres_url.rpartition("/")
    proxy = await TcpProxy("127.0.0.1", int(host_port.rsplit(":", 1)[1])).start()
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/{database}"
    await migrate(url)
    store = SqlStore(url)
    await store.start()
    try:
        user = await store.create_user(f"u{uuid.uuid4().hex[:8]}", "x", "U")
        for _ in range(5):  # several kept-open reader connections
            assert await store.get_user(user.id) == user
        await proxy.cut()
        await proxy.restore()
        assert await store.get_user(user.id) == user
        other = await store.create_user(f"u{uuid.uuid4().hex[:8]}", "x", "U")
        assert (await store.get_users([user.id, other.id])).keys() == {user.id, other.id}
    finally:
        await store.close()
        await proxy.close()
