"""Configuration, built once at start-up from flags, ``PARLEY_*`` variables and
defaults, then passed down frozen. Nothing reads the environment at import time."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def parse_rate(value: str) -> tuple[float, float]:
    """``"BURST/SECONDS"`` as (tokens a second, burst); ValueError if malformed."""
    burst, sep, seconds = value.partition("/")
    try:
        count, period = int(burst.strip()), float(seconds.strip().rstrip("s"))
    except ValueError:
        count = period = 0
    if not sep or count < 1 or period <= 0:
        raise ValueError(f"a rate is BURST/SECONDS, e.g. 60/10, not {value!r}")
    return count / period, float(count)


class Settings(BaseSettings):
    """Every knob of ``parley serve``; each field is also ``PARLEY_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_", frozen=True, extra="ignore")

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on (0: any free).")
    data_dir: Path = Field(Path("./parley-data"), description="Embedded database, keys.")
    database_url: str | None = Field(
        None, description="sqlite:///path or postgresql://…; default: SQLite in data_dir."
    )
    database_replica_urls: str | None = Field(
        None,
        description="Comma-separated postgresql:// read replicas for history pages; "
        "a replica behind the primary is never read for a room it has not caught up with.",
    )
    bus_url: str = Field("memory://", description="memory://, amqp://, redis://, nats://")
    cache_url: str = Field("memory://", description="memory:// or redis://")
    node_id: str | None = Field(None, description="This node's name; generated if unset.")
    allowed_origins: str | None = Field(
        None, description="Comma-separated WebSocket/CORS origins; default: own origin."
    )
    registration: Literal["open", "closed", "invite"] = Field(
        "open",
        description="Who may sign up: open, closed, or invite (a code an admin made); "
        "an admin's choice at run time (stored in the database) takes precedence.",
    )
    rate_limits: Literal["on", "off"] = Field(
        "on", description="off: every rate limit off (benchmarks and test rigs only)."
    )
    rate_limit_send: str = Field(
        "60/10",
        description="Messages a user sends, as BURST/SECONDS (a bucket of BURST "
        "refilled over SECONDS).",
    )
    rate_limit_edit: str = Field(
        "60/60", description="Edits, deletions and reaction changes of a user, BURST/SECONDS."
    )
    rate_limit_rooms: str = Field(
        "10/60", description="Rooms a user creates or changes, direct rooms opened, BURST/SECONDS."
    )
    rate_limit_membership: str = Field(
        "30/60",
        description="Joins, leaves, member additions and removals of a user, BURST/SECONDS.",
    )
    rate_limit_read: str = Field(
        "300/60", description="REST reads (and read markers) of a user, BURST/SECONDS."
    )
    rate_limit_typing: str = Field("20/10", description="Typing frames of a user, BURST/SECONDS.")
    rate_limit_presence: str = Field(
        "30/60",
        description="Presence frames (set, subscribe, unsubscribe) of a user, BURST/SECONDS.",
    )
    rate_limit_register: str = Field(
        "20/3600", description="Registrations from one address, BURST/SECONDS."
    )
    rate_limit_login: str = Field(
        "30/300",
        description="Password logins from one address, whatever the usernames (slows "
        "password spraying), BURST/SECONDS.",
    )
    rate_limit_login_user: str = Field(
        "10/300",
        description="Password logins from one address for one username, BURST/SECONDS. "
        "Keyed by address, so nobody elsewhere can lock an account out.",
    )
    rate_limit_refresh: str = Field(
        "120/60", description="Token refreshes from one address, BURST/SECONDS."
    )
    rate_limit_revoke: str = Field(
        "60/60", description="Token revocations from one address, BURST/SECONDS."
    )
    public_url: str | None = Field(None, description="The URL users reach this server at.")
    secret_key: str | None = Field(
        None,
        description="Hex JWT signing key shared by a cluster; default: generated in data_dir.",
        repr=False,
    )
    master_key: str | None = Field(
        None,
        description="Hex master key (32 bytes) that wraps the keys sealing message text at "
        "rest; the same on every node of a cluster. Default: PARLEY_MASTER_KEY_FILE, else "
        "master.key in data_dir, generated on first start (back it up).",
        repr=False,
    )
    master_key_file: Path | None = Field(
        None, description="A file holding the hex master key (e.g. a mounted secret)."
    )
    key_check_interval: float = Field(
        30.0,
        gt=0,
        description="Seconds between checks for a rotated key (then new writes use it and "
        "older rows are re-sealed in the background).",
    )
    issuer: str = Field("parley", description="JWT iss claim.")
    access_token_ttl: int = Field(900, ge=1, description="Access token lifetime, seconds.")
    refresh_token_ttl: int = Field(30 * 86400, ge=60, description="Refresh lifetime, seconds.")
    max_body_bytes: int = Field(16384, ge=1, le=1 << 20, description="Max message body.")
    group_commit: bool = Field(True, description="Group concurrent writes into one commit.")
    group_commit_max: int = Field(512, ge=1, description="Most writes in one commit.")
    heartbeat_interval: float = Field(20.0, gt=0, description="WebSocket ping interval, s.")
    idle_after: float = Field(300.0, gt=0, description="Presence idle after, seconds.")
    presence_grace: float = Field(10.0, ge=0, description="Offline grace period, seconds.")
    outbound_queue: int = Field(1024, ge=8, description="Frames queued per connection.")
    replay_cache: int = Field(
        128, ge=0, description="Recent events kept per active room for resumes (0: off)."
    )
    drain_seconds: float = Field(
        20.0,
        gt=0,
        description="Seconds a stopping node (SIGTERM) takes at most to finish its sends, "
        "close its WebSockets with 1012 and exit.",
    )
    repair_interval: float = Field(
        2.0,
        gt=0,
        description="Seconds between checks of this node's rooms against the database, "
        "which repair what the bus lost.",
    )
    bus_outbox: int = Field(
        10000, ge=16, description="Bus messages held for the broker while it is unreachable."
    )
    max_frame_bytes: int = Field(65536, ge=1024, description="Max inbound WebSocket frame.")
    frames_per_second: int = Field(50, ge=1, description="Inbound frame rate per connection.")
    argon2_time_cost: int = Field(2, ge=1, description="Argon2id passes (OWASP: 2).")
    argon2_memory_kib: int = Field(19456, ge=8, description="Argon2id memory (OWASP: 19 MiB).")
    log_level: str = Field("info", description="debug, info, warning, error.")
    request_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a client has to send a whole HTTP request (headers and body) "
        "from its first byte or from connecting; then the connection is closed (slowloris).",
    )
    keepalive_timeout: int = Field(
        5, ge=1, description="Seconds an idle keep-alive HTTP connection stays open."
    )
    max_connections: int = Field(
        10000, ge=1, description="Open connections of the node (HTTP and WebSocket); then 503."
    )
    max_connections_per_ip: int = Field(
        256,
        ge=1,
        description="Open connections from one address (trusted proxies exempt); then 503.",
    )
    max_unauthenticated_ws_per_ip: int = Field(
        32,
        ge=1,
        description="WebSockets of one address not yet authenticated; then 503 or close 1013.",
    )
    metrics_token: str | None = Field(
        None, description="Bearer token that opens /metrics from any address.", repr=False
    )
    metrics_allow: str = Field(
        "127.0.0.0/8,::1",
        description="Comma-separated addresses or CIDRs that may read /metrics without a token.",
    )
    trusted_proxies: str | None = Field(
        None,
        description="Comma-separated addresses or CIDRs of reverse proxies whose "
        "X-Forwarded-For and X-Forwarded-Proto are believed; default: none.",
    )
    tls_cert: Path | None = Field(
        None,
        description="PEM certificate chain: with tls_key, serve HTTPS and WSS only "
        "(with Strict-Transport-Security); unset: plain HTTP, for a TLS proxy in front.",
    )
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert (keep it 0600).")
    hsts_max_age: int = Field(
        31536000,
        ge=0,
        description="Strict-Transport-Security max-age, seconds, sent when TLS is on.",
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file not found: {path}")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @field_validator("secret_key")
    @classmethod
    def _hex_key(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                key = bytes.fromhex(value)
            except ValueError as exc:
                raise ValueError("secret_key must be hex") from exc
            if len(key) < 32:
                raise ValueError("secret_key must be at least 32 bytes (64 hex digits)")
        return value

    @field_validator("master_key")
    @classmethod
    def _master_key(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                key = bytes.fromhex(value)
            except ValueError as exc:
                raise ValueError("master_key must be hex") from exc
            if len(key) != 32:
                raise ValueError("master_key must be 32 bytes (64 hex digits)")
        return value

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL of the database, with the async driver named."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'parley.db').resolve()}"
        for plain, driver in (
            ("sqlite://", "sqlite+aiosqlite://"),
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain) :]
        return url

    @field_validator(
        "rate_limit_send",
        "rate_limit_edit",
        "rate_limit_rooms",
        "rate_limit_membership",
        "rate_limit_read",
        "rate_limit_typing",
        "rate_limit_presence",
        "rate_limit_register",
        "rate_limit_login",
        "rate_limit_login_user",
        "rate_limit_refresh",
        "rate_limit_revoke",
    )
    @classmethod
    def _rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    @property
    def replica_urls(self) -> list[str]:
        """The read replicas' URLs, as listed (a comma splits URLs only before a
        ``postgres`` scheme: a multi-host URL keeps its own commas)."""
        if not self.database_replica_urls:
            return []
        parts = re.split(r",(?=\s*postgres)", self.database_replica_urls)
        return [p.strip() for p in parts if p.strip()]

    @property
    def proxies(self) -> list[str]:
        """Trusted proxy addresses and networks, as listed."""
        if not self.trusted_proxies:
            return []
        return [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]

    @property
    def metrics_networks(self) -> list[str]:
        """Addresses and networks that may read ``/metrics``."""
        return [p.strip() for p in self.metrics_allow.split(",") if p.strip()]

    @field_validator("trusted_proxies", "metrics_allow")
    @classmethod
    def _networks(cls, value: str | None) -> str | None:
        for item in (value or "").split(","):
            if item.strip():
                try:
                    ipaddress.ip_network(item.strip(), strict=False)
                except ValueError as exc:
                    raise ValueError(f"not an address or CIDR: {item.strip()!r}") from exc
        return value

    @property
    def origins(self) -> list[str]:
        """Allowed origins; empty means the server's own origin only."""
        if not self.allowed_origins:
            return []
        return [o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip()]
