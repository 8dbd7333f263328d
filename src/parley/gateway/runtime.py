"""Everything one node runs, built once from ``Settings`` and torn down in order."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from parley.auth.passwords import Passwords
from parley.auth.tokens import Tokens, load_or_create_key
from parley.bus import connect_bus
from parley.cache import connect_cache, connect_presence
from parley.domain.admin import RegistrationMode
from parley.gateway.hub import Hub
from parley.ports import Bus, Cache, Store
from parley.presence import CoMembers, PresenceConfig, PresenceService, SystemClock
from parley.service.accounts import Accounts
from parley.service.admin import AdminService
from parley.service.chat import ChatService
from parley.service.notifications import NotificationService
from parley.settings import Settings
from parley.store import SqlStore, migrate
from parley.store.crypto import KeyRing, load_master_key

log = logging.getLogger(__name__)


def open_key_ring(settings: Settings) -> KeyRing:
    """The key ring for the master key the settings name; on first start without one,
    a new key in ``data_dir/master.key`` (0600), logged so that it gets backed up."""
    key, created = load_master_key(
        settings.master_key, settings.master_key_file, Path(settings.data_dir)
    )
    if created:
        log.warning(
            "generated the master key %s: back it up apart from the database; without it "
            "no stored message can be read. Every node of a cluster needs the same key "
            "(PARLEY_MASTER_KEY or PARLEY_MASTER_KEY_FILE).",
            Path(settings.data_dir) / "master.key",
        )
    return KeyRing(key)


def _make_private(data_dir: Path) -> None:
    """The data dir 0700 and every file in it 0600, whatever the umask: it holds the
    database, its WAL and the keys. Files made later are created 0600 by their
    writers (``prepare_sqlite_path``, ``load_or_create_key``)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir.chmod(0o700)
    for path in data_dir.iterdir():
        if path.is_file() and path.stat().st_mode & 0o077:
            path.chmod(0o600)


@dataclass(slots=True)
class Runtime:
    """The wired node: ports, services and the fan-out hub."""

    settings: Settings
    node_id: str
    store: Store
    bus: Bus
    cache: Cache
    hub: Hub
    presence: PresenceService
    tokens: Tokens
    accounts: Accounts
    admin: AdminService
    chat: ChatService
    notifications: NotificationService

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        """Create the data dir, migrate, connect every backend, start the hub."""
        data_dir = Path(settings.data_dir)
        _make_private(data_dir)
        node_id = settings.node_id or f"node-{secrets.token_hex(4)}"
        url = settings.resolved_database_url
        await migrate(url)
        store = SqlStore(
            url,
            group_commit=settings.group_commit,
            group_commit_max=settings.group_commit_max,
            replica_urls=settings.replica_urls,
            keys=open_key_ring(settings),
            key_check_interval=settings.key_check_interval,
        )
        await store.start()
        bus = connect_bus(settings.bus_url, node_id=node_id)
        cache = connect_cache(settings.cache_url)
        await cache.start()
        hub = Hub(bus=bus, store=store, settings=settings, node_id=node_id)
        store.on_commit = hub.metrics.observe_commit
        if store.replica_stats is not None:
            hub.metrics.watch_replicas(store.replica_stats)
        store.on_events = hub.committed
        store.on_notifications = hub.notified
        presence_store = connect_presence(settings.cache_url, cache=cache)
        await presence_store.start()
        clock = SystemClock()
        presence = PresenceService(
            presence_store,
            bus,
            clock,
            PresenceConfig.from_settings(settings),
            node_id=node_id,
            visibility=CoMembers.of_store(store, clock),
        )
        hub.presence = presence
        hub.metrics.watch_presence(presence.stats)
        await hub.start()
        await presence.start()
        key = (
            bytes.fromhex(settings.secret_key)
            if settings.secret_key
            else load_or_create_key(data_dir / "jwt.key")
        )
        tokens = Tokens(
            store,
            key,
            issuer=settings.issuer,
            access_ttl=settings.access_token_ttl,
            refresh_ttl=settings.refresh_token_ttl,
        )
        hub.sessions_ended = tokens.end_sessions
        passwords = Passwords(
            time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib
        )
        admin = AdminService(store, passwords, registration=RegistrationMode(settings.registration))
        return cls(
            settings=settings,
            node_id=node_id,
            store=store,
            bus=bus,
            cache=cache,
            hub=hub,
            presence=presence,
            tokens=tokens,
            accounts=Accounts(store, passwords, tokens, admin),
            admin=admin,
            chat=ChatService(store, max_body_bytes=settings.max_body_bytes),
            notifications=NotificationService(store),
        )

    async def close(self) -> None:
        """Stop taking work, finish queued writes, disconnect."""
        await self.hub.drain()
        await self.presence.close()
        await self.hub.close()
        await self.presence.store.close()
        await self.store.close()
        await self.cache.close()
