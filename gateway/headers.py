"""What of a client's request crosses to NanoGPT, and what of NanoGPT's answer comes back:
headers both ways and the query string. Credentials never cross (the team key is put in their
place), nor do client identity and telemetry headers unless configured. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote_plus

from gateway.types import Secret

# RFC 9110 section 7.6.1, plus the names every proxy treats the same way.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
CREDENTIALS = frozenset(
    {
        "authorization",
        "x-api-key",
        "api-key",  # Azure OpenAI
        "x-goog-api-key",  # Gemini
        "anthropic-api-key",
        "x-anthropic-api-key",
        "openai-api-key",
        "x-openai-api-key",
        "x-auth-token",
        "x-access-token",
        "cookie",
    }
)
"""Every header a client library may carry a key in: none of them reaches NanoGPT, whether
or not the gateway read a member key from it."""
# Credentials stay here; length, encoding and `Expect` (answered by our own server already)
# are the client library's business.
NOT_FORWARDED = HOP_BY_HOP | CREDENTIALS | {"expect", "host", "content-length", "accept-encoding"}
IDENTITY_PREFIXES = ("x-openwebui-", "x-codex-", "x-session-", "x-claude-code-")
"""Client telemetry and identity (Open WebUI's user name and e-mail, Codex's turn metadata
with local paths, session ids): the team's business, not NanoGPT's, unless
`upstream.forward_client_headers` names them."""
IDENTITY = frozenset({"session_id", "session-id", "conversation_id", "x-conversation-id"})
CREDENTIAL_PARAMS = frozenset(
    {"key", "api_key", "api-key", "apikey", "x-api-key", "access_token", "token", "auth"}
)
"""Query parameters a key may be sent in (`?key=` as Gemini's API takes it)."""
# The body may be relayed decoded or redacted, so its length no longer holds (and its
# Content-Encoding goes only when it was decoded: `Decoder`); a cookie set for the team's
# account must never reach a member; the gateway's own server dates its answer, and a second
# Date header is not HTTP (RFC 9110 section 5.3); nor is NanoGPT's server software the
# member's business.
NOT_RETURNED = HOP_BY_HOP | {"content-length", "set-cookie", "date", "server"}


def forwarded_headers(
    headers: Iterable[tuple[str, str]],
    team_key: Secret,
    *,
    keep: frozenset[str] = frozenset(),
    drop: frozenset[str] = frozenset(),
) -> list[tuple[str, str]]:
    """The client's end-to-end headers, minus every credential, client identity (unless named
    in `keep`) and the names in `drop` (a member's end-user header), plus the team key."""
    pairs = [(k.lower(), v) for k, v in headers]
    named_in_connection = {
        token.strip().lower() for k, v in pairs if k == "connection" for token in v.split(",")
    }
    kept = [
        (k, v)
        for k, v in pairs
        if k not in NOT_FORWARDED
        and k not in named_in_connection
        and k not in drop
        and (k in keep or not (k in IDENTITY or k.startswith(IDENTITY_PREFIXES)))
    ]
    kept.append(("authorization", f"Bearer {team_key.reveal()}"))
    return kept


def forwarded_query(query: bytes) -> bytes:
    """The query string without any parameter a key could be in, otherwise byte for byte."""
    if not query or b"=" not in query:
        return query
    kept = [
        part
        for part in query.split(b"&")
        if unquote_plus(part.split(b"=", 1)[0].decode("latin-1")).lower() not in CREDENTIAL_PARAMS
    ]
    return b"&".join(kept)


def returned_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream's end-to-end headers, as the raw bytes the relay sends on."""
    return [(k, v) for k, v in headers if k.decode("latin-1").lower() not in NOT_RETURNED]
