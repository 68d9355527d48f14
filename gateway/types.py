"""The gateway's shared vocabulary: members, catalog models and policy rules.

Frozen value objects with no behaviour beyond reading themselves; every other module speaks in
these. Imports nothing from the gateway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

ModelKind = Literal["text", "embedding"]
Distillation = Literal["any", "allowed"]


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
    capabilities: frozenset[str] | None = None
    distillation_status: str | None = None
    subscription: bool | None = None
    detailed: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def basic(self) -> dict[str, Any]:
        """The OpenAI model object: exactly the four fields every OpenAI client understands."""
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": self.owned_by,
        }
