"""The gateway's shared vocabulary: members, catalog models and policy rules.

Frozen value objects with no behaviour beyond reading themselves; every other module speaks in
these. Imports nothing from the gateway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

ModelKind = Literal["text", "embedding", "image", "audio", "moderation"]
"""Which of NanoGPT's catalogs a model comes from."""
CostSource = Literal["charged", "catalog", "estimate"]
"""Where a recorded cost comes from: what NanoGPT said it charged, the catalog's prices, or
the request's reservation (it may have been billed, and nothing said how much)."""
Distillation = Literal["any", "allowed"]
Role = Literal["member", "admin"]
"""A stored key's role: `member` keys call `/v1`; `admin` keys call only the admin API."""
KeyStatus = Literal["active", "disabled", "expired", "revoked"]
LimitValue = float | int | str
"""A stored limit value as the config writes it: a number, or `"unlimited"`."""
Outcome = Literal[
    "ok",  # the upstream answered 2xx and the body reached the client whole
    "refused",  # the gateway said no (400, 401, 403, 404, 413, 429): NanoGPT was not called
    "upstream_error",  # NanoGPT answered with an error status
    "upstream_failed",  # NanoGPT could not be reached, timed out or broke off mid-response
    "client_disconnected",  # the client went away before the end of the response
    "shutdown",  # the server stopped while the response was still being relayed
    "error",  # the gateway itself failed
]


class Secret:
    """A string that never shows itself in a repr, a traceback's locals or an f-string."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    """A team member as the gateway knows them: a name and the SHA-256 of their key, never the key."""

    name: str
    key_sha256: str
    admin: bool = False
    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] = ()
    end_user_header: str | None = None
    limits: Limits = field(default_factory=lambda: Limits())
    allow_paygo_override: bool = False
    """May send NanoGPT's pay-as-you-go billing override (`X-Billing-Mode`, `billing_mode`)."""
    allow_provider_selection: bool = False
    """May pick NanoGPT's upstream provider (`X-Provider`, `provider`, a routing suffix)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """What one member may use: `None` is no limit, `0` nothing at all. Budgets in USD per
    calendar day / month (in `LimitRules.timezone`); rates per minute."""

    budget_usd_daily: Decimal | None = None
    budget_usd_monthly: Decimal | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent_requests: int | None = None
    end_user_budget_usd_daily: Decimal | None = None
    end_user_budget_usd_monthly: Decimal | None = None

    @property
    def budgeted(self) -> bool:
        """Whether any budget bounds this member's spend (their own or their end users')."""
        return any(
            b is not None
            for b in (
                self.budget_usd_daily,
                self.budget_usd_monthly,
                self.end_user_budget_usd_daily,
                self.end_user_budget_usd_monthly,
            )
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitRules:
    """The team-wide side of the limits: the calendar they count in, the team's own budgets,
    the balance floor, and the completion length assumed when a request sets none."""

    timezone: str = "UTC"
    team_budget_usd_daily: Decimal | None = None
    team_budget_usd_monthly: Decimal | None = None
    min_balance_usd: Decimal | None = None
    default_max_tokens: int = 4096


ANONYMOUS = Member(name="anonymous", key_sha256="")
"""Who a request is under `auth.mode = "none"`; no configured member may take the name."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyRules:
    """The global model policy. `None` and empty mean "no rule"; members may only narrow it."""

    allow: tuple[str, ...] = ("*",)
    deny: tuple[str, ...] = ()
    distillation: Distillation = "any"
    max_prompt_usd_per_mtok: float | None = None
    max_completion_usd_per_mtok: float | None = None
    require_capabilities: tuple[str, ...] = ()
    subscription_only: bool = False
    allow_paygo_override: bool = False
    allow_provider_selection: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelInfo:
    """One catalog entry, with the fields policy reads already parsed.

    `None` means the catalog did not say, which is different from "no": an unknown field never
    passes a policy rule that needs it.
    """

    id: str
    kind: ModelKind = "text"
    created: int = 0
    owned_by: str = "nanogpt"
    prompt_usd_per_mtok: float | None = None
    completion_usd_per_mtok: float | None = None
    max_output_tokens: int | None = None
    name: str | None = None
    context_length: int | None = None
    capabilities: frozenset[str] | None = None
    distillation_status: str | None = None
    subscription: bool | None = None
    detailed: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def basic(self) -> dict[str, Any]:
        """The OpenAI model object's four fields, and the display name and context window when
        the catalog gives them (Open WebUI shows the name; aider and Codex read the window):
        extra fields, which OpenAI's list shape lets clients ignore."""
        model: dict[str, Any] = {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": self.owned_by,
        }
        if self.name is not None:
            model["name"] = self.name
        if self.context_length is not None:
            model["context_length"] = self.context_length
        return model


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens, exact: a catalog's `0.28` is 0.28, not 0.28000000000000002665."""

    prompt: Decimal
    completion: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """What NanoGPT reported of one response: token counts (cached and reasoning tokens are
    breakdowns, already inside `prompt_tokens` and `completion_tokens`), and what it charged in
    USD when it said so."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    reasoning_tokens: int = 0
    charged_usd: Decimal | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Finished:
    """One finished request, as every sink sees it: the metrics, the ledger (a row), and the
    limiter. `member` is `None` for a request no key vouched for; `usage` is `None` when the
    request ended without NanoGPT reporting any; `cost_usd` is exact, never a float;
    `unmetered` says why a request that reached NanoGPT has no known cost (the metric's
    reasons); `upstream_failure` how NanoGPT failed, if it did (`connect`, `timeout`,
    `protocol`)."""

    time: float
    request_id: str
    member: str | None
    endpoint: str
    """The endpoint's name in the table (`other` for an unlisted path); `path` the path below
    `/v1/` as forwarded."""
    status: int
    outcome: Outcome
    path: str | None = None
    model: str | None = None
    end_user: str | None = None
    stream: bool = False
    usage: Usage | None = None
    cost_usd: Decimal | None = None
    cost_source: CostSource | None = None
    unmetered: str | None = None
    duration_seconds: float = 0.0
    ttft_seconds: float | None = None
    upstream_failure: str | None = None
    limit: str | None = None
    """The limit that refused the request (`limits.LIMIT_NAMES`), if one did."""
    key_id: str | None = None
    """The public id of the stored key the request came with (`None`: a config member's)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredKey:
    """One key as the store holds it: never the secret, only its SHA-256. `limits` holds the
    member's own limit values (a missing one is the `[limits]` default). After a rotation,
    `previous_sha256` stays valid until `previous_valid_until`. Times are unix seconds."""

    public_id: str
    name: str
    secret_sha256: str
    created_at: float
    role: Role = "member"
    expires_at: float | None = None
    disabled: bool = False
    revoked_at: float | None = None
    rotated_at: float | None = None
    previous_sha256: str | None = None
    previous_valid_until: float | None = None
    may_change_account: bool = False
    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] = ()
    limits: Mapping[str, LimitValue] = field(default_factory=dict)
    end_user_header: str | None = None
    note: str = ""
    last_used_at: float | None = None

    def status(self, now: float) -> KeyStatus:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "disabled" if self.disabled else "active"
