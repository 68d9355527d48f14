"""The gateway's error tree and the one error shape clients see.

Every error the gateway produces is a `GatewayError` and is rendered by `error_body()` as
OpenAI's `{"error": {"message", "type", "code"}}`, so SDKs raise their usual exception types.
Imports nothing from the gateway.

    GatewayError                      500 api_error
    ├── InvalidRequest                400 invalid_request_error
    │   ├── PayloadTooLarge           413
    │   ├── UnsupportedMediaType      415 (a compressed request body)
    │   ├── UnknownEndpoint           404 unknown_endpoint
    │   ├── MethodNotAllowed          405 method_not_allowed
    │   ├── ModelNotFound             404 model_not_found
    │   ├── NotFound                  404 not_found (key_not_found, admin_api_disabled)
    │   └── Conflict                  409 conflict (name_taken)
    ├── InvalidApiKey                 401 authentication_error
    ├── PermissionDenied              403 permission_error
    │   └── ModelNotAllowed           403 model_not_allowed (model_not_priced,
    │                                     billing_override_not_allowed)
    ├── RateLimited                   429 requests | tokens, rate_limit_exceeded (with headers)
    ├── QuotaExceeded                 429 insufficient_quota, *_budget_exceeded (with headers)
    ├── LimitsUnavailable             503 limits_unavailable (the shared limits' Redis is away)
    ├── CatalogUnavailable            503 catalog_unavailable
    ├── StoreUnavailable              503 keystore_unavailable (ledger_unavailable)
    └── UpstreamError                 502 upstream_unreachable
        └── UpstreamTimeout           504 upstream_timeout
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    status_code: int = 500
    type: str = "api_error"
    code: str = "internal_error"
    headers: dict[str, str]
    """Sent with the error response (`retry-after` and friends)."""

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.headers = {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, code=self.code, param=self.param)


class InvalidRequest(GatewayError):
    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"


class PayloadTooLarge(InvalidRequest):
    status_code = 413
    code = "request_too_large"


class UnsupportedMediaType(InvalidRequest):
    status_code = 415
    code = "unsupported_media_type"


class UnknownEndpoint(InvalidRequest):
    status_code = 404
    code = "unknown_endpoint"


class MethodNotAllowed(InvalidRequest):
    status_code = 405
    code = "method_not_allowed"


class ModelNotFound(InvalidRequest):
    status_code = 404
    code = "model_not_found"


class NotFound(InvalidRequest):
    """Something the admin API was asked about does not exist (a key), or the admin API is
    off."""

    status_code = 404
    code = "not_found"


class Conflict(InvalidRequest):
    status_code = 409
    code = "conflict"


class InvalidApiKey(GatewayError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status_code = 403
    type = "permission_error"
    code = "permission_denied"


class ModelNotAllowed(PermissionDenied):
    code = "model_not_allowed"


class Refusal(GatewayError):
    """A 429 from a limit: which limit (for the ledger and metrics), and the headers that tell
    an OpenAI SDK whether and when to retry."""

    status_code = 429

    def __init__(
        self,
        message: str,
        *,
        limit: str,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
        from_upstream: bool = False,
    ) -> None:
        super().__init__(message, code=code)
        if type is not None:
            self.type = type
        self.limit = limit
        self.headers = headers or {}
        self.from_upstream = from_upstream
        """NanoGPT itself refused (its 402 or daily limit), relayed in the gateway's words."""


class RateLimited(Refusal):
    type = "requests"
    code = "rate_limit_exceeded"


class QuotaExceeded(Refusal):
    type = "insufficient_quota"
    code = "member_budget_exceeded"


class LimitsUnavailable(Refusal):
    """The shared limits cannot be read (Redis does not answer) and `[state] on_redis_error`
    says to refuse what they bound rather than spend unchecked."""

    status_code = 503
    type = "service_unavailable_error"
    code = "limits_unavailable"

    def __init__(self, kind: str) -> None:
        what = "budgets" if kind == "budgets" else "rate and concurrency limits"
        super().__init__(
            f"The gateway cannot check this member's {what} just now (their shared store, "
            "Redis, does not answer), so it refuses rather than spend unchecked. Try again "
            "shortly.",
            limit="limits_unavailable",
            headers={"retry-after": "5", "retry-after-ms": "5000", "x-should-retry": "true"},
        )


class CatalogUnavailable(GatewayError):
    status_code = 503
    type = "service_unavailable_error"
    code = "catalog_unavailable"


class StoreUnavailable(GatewayError):
    """The key store or the usage ledger cannot be read or written just now."""

    status_code = 503
    type = "service_unavailable_error"
    code = "keystore_unavailable"


class UpstreamError(GatewayError):
    status_code = 502
    type = "upstream_error"
    code = "upstream_unreachable"
    reason = "protocol"
    """How NanoGPT failed, for metrics: `connect`, `timeout` or `protocol` (broke off mid-way)."""

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail or message
        """What failed in the gateway's terms (the upstream URL, the client library's words):
        for the log, under the request id, never for the client."""


class UpstreamTimeout(UpstreamError):
    status_code = 504
    code = "upstream_timeout"
    reason = "timeout"


def error_body(
    message: str, *, type: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    """The OpenAI error object; `param` is always present because the SDKs read it."""
    return {"error": {"message": message, "type": type, "code": code, "param": param}}
