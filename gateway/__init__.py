"""nanogpt-gateway: an OpenAI-compatible gateway for a team sharing one NanoGPT account."""

__version__ = "0.1.0"
