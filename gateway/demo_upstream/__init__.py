"""An offline stand-in for the NanoGPT API (https://nano-gpt.com/api), shaped like the real one
but not it: canned, deterministic replies from a fixed catalog.

Used by the gateway's demo mode and tests: SSE streaming, NanoGPT's `x_nanogpt_pricing` charge on
chat and text completions, the Responses and Anthropic Messages APIs, embeddings, images, audio
and moderations. One module per API family (`chat`, `responses`, `messages`, `media`), the shared
HTTP plumbing in `wire`, the routes in `app`, the data in `catalog`. No module here imports
anything else of the `gateway` package, so the stand-in stays an honest, independent upstream.
"""

from __future__ import annotations

from gateway.demo_upstream.app import DEMO_TEAM_KEY, create_demo_upstream

__all__ = ["DEMO_TEAM_KEY", "create_demo_upstream"]
