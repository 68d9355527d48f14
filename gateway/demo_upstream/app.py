"""The demo upstream's routes: the catalogs and balance, and each API family's endpoints, behind
the team key; `create_demo_upstream` builds the Starlette app.

Every route needs the team key and lives under `/api`, except `/v1/images/generations`, which
NanoGPT documents at the host root, and the image file its `url` answers point at.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.demo_upstream import catalog as cat
from gateway.demo_upstream import chat, media, messages, responses
from gateway.demo_upstream.wire import Endpoint, Json, authed, error_response, invalid

DEMO_TEAM_KEY: str = "demo-team-key"

_INTERNAL = ("subscription", "visible")
_BASIC = ("id", "object", "created", "owned_by")


def _model_view(m: Json, detailed: bool) -> Json:
    view = {"id": m["id"], "object": "model", "created": m["created"], "owned_by": m["owned_by"]}
    extra = {k: v for k, v in m.items() if k not in view and k not in _INTERNAL}
    return {**view, **extra} if detailed else view


def _models_endpoint(select: Callable[[Json], bool]) -> Endpoint:
    async def list_models(request: Request) -> Response:
        detailed = request.query_params.get("detailed", "").lower() in ("true", "1")
        data = [_model_view(m, detailed) for m in cat.TEXT_MODELS if select(m)]
        return JSONResponse({"object": "list", "data": data})

    return authed(list_models)


def _catalog(models: tuple[Json, ...], types: dict[str, str] | None = None) -> Endpoint:
    """A media catalog: `detailed` defaults to true, `meta` counts, `type` picks a category."""
    types = types or {}

    async def listing(request: Request) -> Response:
        chosen = request.query_params.get("type", "all")
        if chosen != "all" and chosen not in types:
            raise invalid(f"'type' must be one of: all, {', '.join(types)}", "type")
        data = [m for m in models if chosen == "all" or m["category"] == types[chosen]]
        if request.query_params.get("detailed", "true").lower() in ("false", "0"):
            data = [{k: m[k] for k in _BASIC} for m in data]
        meta = {"count": len(data), "generated_at": "2026-01-01T00:00:00.000Z"}
        meta |= {"filter": {"type": chosen}} if chosen != "all" else {}
        return JSONResponse({"object": "list", "data": data, "meta": meta})

    return authed(listing)


def _fixed(payload: Json) -> Endpoint:
    async def fixed(request: Request) -> Response:
        return JSONResponse(payload)

    return authed(fixed)


def create_demo_upstream(
    *, team_key: str = DEMO_TEAM_KEY, chunk_delay_seconds: float = 0.0
) -> Starlette:
    """Build the stand-in app; every route but the demo image file requires `team_key`."""
    post = ["POST"]
    audio_types = {"stt": "audio_stt", "tts": "audio_tts"}
    routes = [
        Route("/api/v1/models", _models_endpoint(lambda m: True)),
        Route("/api/subscription/v1/models", _models_endpoint(lambda m: m["subscription"])),
        Route("/api/paid/v1/models", _models_endpoint(lambda m: not m["subscription"])),
        Route("/api/personalized/v1/models", _models_endpoint(lambda m: m["visible"])),
        Route(
            "/api/v1/embedding-models", _fixed({"object": "list", "data": [*cat.EMBEDDING_MODELS]})
        ),
        Route("/api/v1/image-models", _catalog(cat.IMAGE_MODELS)),
        Route("/api/v1/audio-models", _catalog(cat.AUDIO_MODELS, audio_types)),
        Route("/api/v1/moderation-models", _catalog(cat.MODERATION_MODELS)),
        Route("/api/v1/chat/completions", authed(chat.chat_completions), methods=post),
        Route("/api/v1/completions", authed(chat.completions), methods=post),
        Route("/api/v1/responses", authed(responses.responses), methods=post),
        Route("/api/v1/messages", authed(messages.messages), methods=post),
        Route("/api/v1/messages/count_tokens", authed(messages.count_tokens), methods=post),
        Route("/api/v1/embeddings", authed(media.embeddings), methods=post),
        Route("/api/v1/images/generations", authed(media.image_generations), methods=post),
        Route("/v1/images/generations", authed(media.image_generations), methods=post),
        Route("/demo/image.png", media.demo_image),
        Route("/api/v1/audio/transcriptions", authed(media.transcriptions), methods=post),
        Route("/api/v1/audio/speech", authed(media.speech), methods=post),
        Route("/api/v1/moderations", authed(media.moderations), methods=post),
        Route("/api/check-balance", _fixed(cat.BALANCE), methods=post),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: error_response})
    app.state.team_key = team_key
    app.state.chunk_delay_seconds = chunk_delay_seconds
    return app
