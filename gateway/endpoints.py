"""The one endpoint table: every `/v1` endpoint the gateway serves, as data, and `classify()`,
which turns a request's raw path into exactly one entry. Pure.

The path is decoded once (percent-escapes, `%2F` included), empty segments (`//`) dropped, dot
segments, backslashes, control characters and escapes left after one decoding refused, and
literal segments matched case-insensitively; the admin check, the policy, the metering label
and the upstream path all see that one form. What is not in the table is refused unless
`upstream.forward_unlisted` is set. Facts from NanoGPT's docs (`api-reference/endpoint/*`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote

from gateway.errors import InvalidRequest, MethodNotAllowed, UnknownEndpoint
from gateway.types import ModelKind

ModelIn = Literal["body", "none"]
"""Where a request names its model: `body` is a JSON field or a multipart / urlencoded form
field, whatever the content type says."""
Metering = Literal["openai", "anthropic", "cost", "unreported", "free"]
"""How a response says what it cost: OpenAI `usage` (chat, completions, responses,
embeddings, moderations); Anthropic `usage`; a `cost` in USD in the body; nothing (it costs
money, but NanoGPT does not say how much); or it costs nothing. NanoGPT's `x_nanogpt_pricing`
is read wherever it appears."""
Access = Literal["member", "admin"]
Base = Literal["api", "root"]
"""`api`: `{upstream.base_url}/v1/...`; `root`: the host root, `{base_url without /api}/v1/...`."""

READ = frozenset({"GET", "HEAD"})
POST = frozenset({"POST"})
WRITE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ALL_METHODS = READ | WRITE | {"OPTIONS"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One row of the table. `path` is below `/v1/`: literal segments, `*` for one segment of
    the client's choosing, `**` for one or more."""

    name: str
    """The endpoint's label in metrics and the ledger."""
    path: str
    methods: frozenset[str]
    summary: str
    model: ModelIn = "none"
    model_required: bool = False
    catalog: ModelKind | None = None
    metering: Metering = "free"
    access: Access = "member"
    base: Base = "api"
    stream_usage_on_request: bool = False
    """Streams report usage only when asked (`stream_options.include_usage`)."""
    served_here: bool = False
    """Answered by the gateway from its cached catalog, never forwarded."""

    @property
    def names_model(self) -> bool:
        return self.model != "none"


def _model_call(
    name: str,
    catalog: ModelKind,
    metering: Metering,
    summary: str,
    *,
    model_required: bool = False,
    stream_usage_on_request: bool = False,
    base: Base = "api",
) -> Endpoint:
    """A `POST` whose body names the model it runs on."""
    return Endpoint(
        name=name,
        path=name,
        methods=POST,
        model="body",
        model_required=model_required,
        catalog=catalog,
        metering=metering,
        base=base,
        stream_usage_on_request=stream_usage_on_request,
        summary=summary,
    )


ENDPOINTS: tuple[Endpoint, ...] = (
    _model_call("chat/completions", "text", "openai", "Chat Completions", model_required=True,
                stream_usage_on_request=True),
    _model_call("completions", "text", "openai", "legacy text completions", model_required=True,
                stream_usage_on_request=True),
    _model_call("responses", "text", "openai", "Responses API (a `character_id` instead of a model passes only an unrestricted policy)"),
    Endpoint(name="responses", path="responses", methods=READ, summary="Responses API info"),
    Endpoint(name="responses", path="responses/*", methods=READ, summary="a stored response"),
    Endpoint(name="responses", path="responses/*", methods=frozenset({"DELETE"}), access="admin",
             summary="delete a stored response (account data)"),
    _model_call("messages", "text", "anthropic", "Anthropic Messages (Claude Code)", model_required=True),
    _model_call("messages/count_tokens", "text", "free", "Anthropic token count", model_required=True),
    _model_call("embeddings", "embedding", "openai", "embeddings", model_required=True),
    _model_call("moderations", "moderation", "openai", "moderations (NanoGPT's default model if none is named)"),
    _model_call("images/generations", "image", "cost", "image generation (NanoGPT serves it at the host root)",
                base="root"),
    _model_call("images/edits", "image", "cost", "image edits (multipart or JSON)"),
    _model_call("images", "image", "cost", "NanoGPT's normalized Image API"),
    _model_call("audio/speech", "audio", "unreported", "text to speech (billed per character; no cost in the answer)",
                model_required=True),
    _model_call("audio/transcriptions", "audio", "unreported", "speech to text (multipart or JSON; no cost in the answer)",
                model_required=True),
    Endpoint(name="models", path="models", methods=READ, served_here=True,
             summary="the text models this member may use, from the cached catalog"),
    Endpoint(name="models", path="models/**", methods=READ, served_here=True,
             summary="one model, if this member may use it"),
    Endpoint(name="key", path="key", methods=READ, served_here=True,
             summary="the gateway's own: this key's limits, what is used and left, when each resets"),
    *(
        Endpoint(name=f"{kind}-models", path=f"{kind}-models", methods=READ,
                 summary=f"NanoGPT's {kind} model catalog, as NanoGPT lists it")
        for kind in ("embedding", "image", "audio", "video", "moderation", "character")
    ),
    Endpoint(name="characters", path="characters", methods=READ, summary="characters"),
    Endpoint(name="characters", path="characters/**", methods=READ, summary="a character"),
    Endpoint(name="characters", path="characters", methods=WRITE, access="admin",
             summary="create characters (account data)"),
    Endpoint(name="characters", path="characters/**", methods=WRITE, access="admin",
             summary="change characters (account data)"),
    Endpoint(name="usage", path="usage", methods=READ, access="admin",
             summary="the whole account's usage and spend"),
    Endpoint(name="usage", path="usage/requests/*", methods=READ, access="admin",
             summary="what one request was billed"),
    Endpoint(name="subscription/usage", path="subscription/usage", methods=READ,
             summary="the subscription's remaining quota"),
)  # fmt: skip

UNLISTED = Endpoint(
    name="other",
    path="**",
    methods=ALL_METHODS,
    metering="unreported",
    summary="any other path, with `upstream.forward_unlisted = true`",
)


@dataclass(frozen=True, slots=True)
class Target:
    """Where one request goes: its table entry, and the path below `/v1/` to forward, spelled
    as the table spells it, with the client's own segments (ids) re-encoded."""

    endpoint: Endpoint
    path: str

    @property
    def tail(self) -> str:
        """The decoded segments `**` matched (a model id under `models/`)."""
        literal = len(self.endpoint.path.split("/")) - 1
        return "/".join(unquote(s) for s in self.path.split("/")[literal:])


def _by_literal_path(table: tuple[Endpoint, ...]) -> dict[str, tuple[Endpoint, ...]]:
    """The entries without a wildcard, by path: most requests are found with one lookup."""
    index: dict[str, tuple[Endpoint, ...]] = {}
    for endpoint in table:
        if "*" not in endpoint.path:
            index[endpoint.path] = (*index.get(endpoint.path, ()), endpoint)
    return index


_LITERAL = _by_literal_path(ENDPOINTS)
_PATTERNS = tuple((e, tuple(e.path.split("/"))) for e in ENDPOINTS if "*" in e.path)


def classify(raw_subpath: str, method: str, *, forward_unlisted: bool = False) -> Target:
    """The table entry for a request to `/v1/{raw_subpath}`: 400 for a path that could mean
    two things, 404 (`unknown_endpoint`) for one not in the table, 405 for a method the
    entry does not take."""
    segments = normalise(raw_subpath)
    literal = _LITERAL.get("/".join(segments).lower())
    if literal is not None:  # spelled as the table spells it, every segment being literal
        endpoint = _for_method(literal, method)
        return Target(endpoint, endpoint.path)
    matches = [(e, pattern) for e, pattern in _PATTERNS if _matches(pattern, segments)]
    if matches:
        endpoint = _for_method([e for e, _ in matches], method)
        pattern = next(p for e, p in matches if e is endpoint)
        return Target(endpoint, _spelled(pattern, segments))
    if forward_unlisted:
        return Target(UNLISTED, _spelled(("**",), segments))
    raise UnknownEndpoint(
        f"The gateway does not serve /v1/{'/'.join(segments)}; see its README for the "
        "endpoints it does."
    )


def _for_method(candidates: Sequence[Endpoint], method: str) -> Endpoint:
    for endpoint in candidates:
        if method in endpoint.methods:
            return endpoint
    allowed = sorted({m for e in candidates for m in e.methods})
    raise MethodNotAllowed(
        f"{method} is not allowed on /v1/{candidates[0].path.replace('**', '...')}; "
        f"use {', '.join(allowed)}."
    )


_AMBIGUOUS = re.compile(r"[\\%\x00-\x1f\x7f]")


def normalise(raw_subpath: str) -> tuple[str, ...]:
    """The decoded segments of a raw path, or 400 when decoding once leaves any doubt."""
    try:
        decoded = unquote(raw_subpath, errors="strict") if "%" in raw_subpath else raw_subpath
    except UnicodeDecodeError:
        raise InvalidRequest("The request path is not valid UTF-8 once decoded.") from None
    if _AMBIGUOUS.search(decoded):
        raise InvalidRequest(
            "The request path must not contain backslashes, control characters or "
            "percent-escapes that are still escaped once decoded."
        )
    segments = tuple(s for s in decoded.split("/") if s)
    # `..;x` is `..` to servers that strip path parameters (Tomcat's `..;/` bypass).
    if any(s.split(";", 1)[0] in (".", "..") for s in segments):
        raise InvalidRequest("The request path must not contain '.' or '..' segments.")
    return segments


def _matches(pattern: tuple[str, ...], segments: tuple[str, ...]) -> bool:
    if pattern[-1] == "**":
        head = pattern[:-1]
        return len(segments) > len(head) and _literal_match(head, segments[: len(head)])
    return len(pattern) == len(segments) and _literal_match(pattern, segments)


def _literal_match(pattern: tuple[str, ...], segments: tuple[str, ...]) -> bool:
    return all(p == "*" or p == s.lower() for p, s in zip(pattern, segments, strict=True))


def _spelled(pattern: tuple[str, ...], segments: tuple[str, ...]) -> str:
    """The table's literal segments, then the client's segments re-encoded one by one."""
    spelled = []
    for i, segment in enumerate(segments):
        literal = i < len(pattern) and pattern[i] not in ("*", "**")
        spelled.append(pattern[i] if literal else quote(segment, safe=""))
    return "/".join(spelled)
