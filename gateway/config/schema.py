"""The one list of settings: each section dataclass's fields are the keys the TOML may hold,
their annotations the types, their defaults the defaults. Values only; no parsing here.
Imports nothing from the gateway but the shared vocabulary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from gateway.types import (
    ANONYMOUS,
    Distillation,
    LimitRules,
    Limits,
    Member,
    PolicyRules,
    Price,
    Secret,
)

DEFAULT_BASE_URL = "https://nano-gpt.com/api"
DEFAULT_LEDGER_PATH = "./gateway-usage.db"
CatalogSource = Literal["canonical", "subscription", "paid", "personalized"]
AuthMode = Literal["keys", "none"]
Unlimited = Literal["unlimited"]
OnError = Literal["closed", "local"]


class ConfigError(ValueError):
    """A configuration mistake, phrased as one line that names where it is."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    access_log: bool = False
    """Off by default: the usage ledger already has a richer row for every request, and a log
    line per request is CPU on the hot path (bench/README.md)."""
    cors_origins: tuple[str, ...] = ()
    """Page origins browsers may call the gateway from (`"*"`: any, with a warning)."""
    allowed_hosts: tuple[str, ...] = ()
    """Names the gateway answers to in `Host`; empty: the loopback names when `host` is a
    loopback address, else any."""
    max_header_bytes: int = 64 * 1024
    """The request line and headers together; more is answered 431, before authentication."""
    max_headers: int = 100
    header_timeout_seconds: float = 10.0
    """For a request's head to arrive, from the connection or the previous answer (408)."""
    body_timeout_seconds: float = 60.0
    """For a request's body to arrive, from its head (408); answers are never timed."""
    shutdown_grace_seconds: float = 30.0
    """On SIGTERM, how long requests in flight may still finish; then streams end with an
    error event `shutting_down`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamSettings:
    base_url: str = DEFAULT_BASE_URL
    api_key_env: str = "NANOGPT_API_KEY"
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 600.0
    max_body_bytes: int = 10 * 1024 * 1024
    forward_unlisted: bool = False
    """Forward `/v1` paths missing from the endpoint table (to members no model rule
    restricts), instead of answering 404."""
    forward_client_headers: tuple[str, ...] = ()
    """Client identity headers (`x-openwebui-*`, `x-codex-*`, session ids) to forward all the
    same; by default they stay at the gateway."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSettings:
    mode: AuthMode = "keys"


@dataclass(frozen=True, slots=True, kw_only=True)
class CatalogSettings:
    source: CatalogSource = "canonical"
    ttl_seconds: float = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySettings:
    allow: tuple[str, ...] = ("*",)
    deny: tuple[str, ...] = ()
    distillation: Distillation = "any"
    max_prompt_usd_per_mtok: float | None = None
    max_completion_usd_per_mtok: float | None = None
    require_capabilities: tuple[str, ...] = ()
    allow_paygo_override: bool = False
    """Let members send NanoGPT's pay-as-you-go override, which bills the team's balance
    for models the subscription would cover."""
    allow_provider_selection: bool = False
    """Let members pick NanoGPT's upstream provider (billed pay-as-you-go, with a markup)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitSettings:
    """Defaults for every member (each `[[members]]` may override them), and the team's own."""

    timezone: str = "UTC"
    budget_usd_daily: float | None = None
    budget_usd_monthly: float | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent_requests: int | None = None
    end_user_budget_usd_daily: float | None = None
    end_user_budget_usd_monthly: float | None = None
    team_budget_usd_daily: float | None = None
    team_budget_usd_monthly: float | None = None
    min_balance_usd: float | None = None
    default_max_tokens: int = 4096


MEMBER_LIMITS = tuple(f.name for f in dataclasses.fields(Limits))
"""The `[limits]` keys a member may override, with a value or `"unlimited"`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MeteringSettings:
    ledger_path: str = DEFAULT_LEDGER_PATH
    inject_stream_usage: bool = True
    balance_poll_seconds: float = 300.0
    metrics_token: str | None = None
    metrics_port: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseSettings:
    """Where the usage ledger, the key store and the admin audit live: one URL,
    `sqlite:///relative/path`, `sqlite:////absolute/path` or `postgresql://...` (default:
    `metering.ledger_path`, a SQLite file)."""

    url: str | None = None
    url_env: str | None = None
    """An environment variable holding the URL instead (it may carry a password)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OnRedisError:
    """What a decision does while Redis does not answer, per class of limit: `closed`
    refuses (503 `limits_unavailable`), `local` counts in this replica alone."""

    budgets: OnError = "closed"
    """Budgets and the balance floor."""
    rates: OnError = "local"
    """Requests and tokens per minute, and concurrency."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StateSettings:
    """Limits shared by every replica, in Redis; without `redis_url`, each process counts
    alone (one replica)."""

    redis_url: str | None = None
    redis_password_env: str | None = None
    lease_ttl_seconds: float = 30.0
    """How long a replica that died keeps its concurrency slots and reservations; a running
    request renews its own every third of it."""
    on_redis_error: OnRedisError = field(default_factory=OnRedisError)


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminSettings:
    """The admin API's credential (`/admin/v1`): a token that calls nothing under `/v1`.
    Keys made with `keys create NAME --admin` are admin credentials too."""

    token_sha256: str | None = None
    token_env: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberSettings:
    name: str
    key_sha256: str | None = None
    key_env: str | None = None
    admin: bool = False
    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] = ()
    end_user_header: str | None = None
    allow_paygo_override: bool | None = None
    allow_provider_selection: bool | None = None
    budget_usd_daily: float | Unlimited | None = None
    budget_usd_monthly: float | Unlimited | None = None
    requests_per_minute: int | Unlimited | None = None
    tokens_per_minute: int | Unlimited | None = None
    max_concurrent_requests: int | Unlimited | None = None
    end_user_budget_usd_daily: float | Unlimited | None = None
    end_user_budget_usd_monthly: float | Unlimited | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceSettings:
    prompt: float
    completion: float


SECTIONS: dict[str, type] = {
    "server": ServerSettings,
    "upstream": UpstreamSettings,
    "auth": AuthSettings,
    "catalog": CatalogSettings,
    "policy": PolicySettings,
    "metering": MeteringSettings,
    "limits": LimitSettings,
    "admin": AdminSettings,
    "database": DatabaseSettings,
    "state": StateSettings,
}


POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True, slots=True)
class Database:
    """The resolved `[database]`: a SQLite file's path, or a PostgreSQL URL (which may carry
    a password, so it never shows itself in a repr)."""

    location: str
    setting: str = "metering.ledger_path"
    """The config key that named it, for messages."""

    @property
    def is_postgresql(self) -> bool:
        return self.location.startswith(POSTGRESQL_SCHEMES)

    @property
    def shown(self) -> str:
        """The location without its password, for messages."""
        return shown_location(self.location)

    def __repr__(self) -> str:
        return f"Database({self.shown!r})"


def shown_location(location: str) -> str:
    """A database location for a message: a URL's password replaced by `***`."""
    scheme, sep, rest = location.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return location
    credentials, _, host = rest.partition("@")
    user, has_password, _ = credentials.partition(":")
    return f"{scheme}://{user}{':***' if has_password else ''}@{host}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Demo:
    """Where the offline stand-in listens, and the team key it accepts (`serve --demo`)."""

    base_url: str
    team_key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    catalog: CatalogSettings = field(default_factory=CatalogSettings)
    policy: PolicyRules = field(default_factory=PolicyRules)
    metering: MeteringSettings = field(default_factory=MeteringSettings)
    limits: LimitRules = field(default_factory=LimitRules)
    pricing: Mapping[str, Price] = field(default_factory=dict)
    members: tuple[Member, ...] = ()
    anonymous: Member = ANONYMOUS
    """Who a request is under `auth.mode = "none"`, with the `[limits]` defaults."""
    team_key: Secret = field(default_factory=lambda: Secret(""))
    database: Database = field(default_factory=lambda: Database(DEFAULT_LEDGER_PATH))
    state: StateSettings = field(default_factory=StateSettings)
    redis_password: Secret = field(default_factory=lambda: Secret(""))
    admin_token_sha256: str | None = None
    """The SHA-256 of `[admin]`'s token: with none (and no admin key stored), the admin API
    is off."""
    demo: bool = False
