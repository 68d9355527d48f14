"""The clients `clients/run` drives: for each, the pinned version, the non-interactive runs
(`Step`s) with the settings that point it at the gateway, and what it cannot do (`n/a`, with
the reason). Adding a client is adding an entry here.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL = "deepseek/deepseek-v3.2"
CLAUDE = "anthropic/claude-opus-4.6"


@dataclass
class Step:
    """One non-interactive run of a client; `covers` names the checks its traffic can prove."""

    name: str
    argv: list[str]
    covers: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    stdin: str | None = None


@dataclass
class Client:
    name: str
    version: str
    steps: Callable[[Ctx], list[Step]]
    na: dict[str, str] = field(default_factory=dict)
    """Checks this client cannot do, with the reason."""
    missing: str = ""
    """Why the client could not be run at all (not installed, ...)."""


@dataclass
class Ctx:
    """Where a client's run happens: the gateway's /v1 URL (through the recorder), the client's
    own member key, a home directory of its own and the tools' locations."""

    base: str  # http://127.0.0.1:PORT (the recorder)
    key: str
    home: Path
    work: Path
    python: str
    node: str
    npm_bin: Path
    py_bin: Path

    @property
    def v1(self) -> str:
        return f"{self.base}/v1"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "GATEWAY_BASE_URL": self.v1,
            "GATEWAY_KEY": self.key,
            "GATEWAY_MODEL": MODEL,
            **extra,
        }


LIBRARY_CHECKS = ("chat", "stream", "tools", "responses", "structured", "embeddings")


def _library(script: str, **env: str) -> Callable[[Ctx], list[Step]]:
    """A library driven by one of this directory's scripts, one check per run."""

    def steps(ctx: Ctx) -> list[Step]:
        if script.endswith(".mjs"):  # run beside node_modules, where its imports resolve
            argv = [ctx.node, str(shutil.copy(HERE / "js" / script, ctx.npm_bin.parent.parent))]
        else:
            argv = [ctx.python, str(HERE / "py" / script)]
        # What each run's traffic can also prove: a tool round trip is two plain chats, the
        # Responses run streams its first turn and calls a tool.
        covers = {
            "tools": ("tools", "chat"),
            "responses": ("responses", "stream", "tools"),
        }
        return [
            Step(check, [*argv, check], covers.get(check, (check,)), ctx.env(**env))
            for check in LIBRARY_CHECKS
        ]

    return steps


def _llm(ctx: Ctx) -> list[Step]:
    (ctx.home / "llm").mkdir(exist_ok=True)
    models = [
        {
            "model_id": "gw",
            "model_name": MODEL,
            "api_base": ctx.v1,
            "api_key_name": "gateway",
            "supports_tools": True,
            "supports_schema": True,
        },
        {
            "model_id": "gw-responses",
            "model_name": MODEL,
            "api_base": ctx.v1,
            "api_key_name": "gateway",
            "supports_tools": True,
            "supports_schema": True,
            "responses": True,
        },
    ]
    (ctx.home / "llm" / "extra-openai-models.yaml").write_text(json.dumps(models))  # JSON is YAML
    (ctx.home / "llm" / "keys.json").write_text(json.dumps({"gateway": ctx.key}))
    llm = str(ctx.py_bin / "llm")
    env = {"LLM_USER_PATH": str(ctx.home / "llm")}
    weather = 'def lookup_weather(city: str) -> str:\n    "Current weather in a city."\n    return "Sunny"\n'
    return [
        Step("chat", [llm, "-m", "gw", "--no-stream", "Weather in Oslo?"], ("chat",), env),
        Step("stream", [llm, "-m", "gw", "Weather in Oslo?"], ("stream",), env),
        Step(
            "tools",
            [llm, "-m", "gw", "--functions", weather, "Weather in Oslo?"],
            ("tools", "stream"),
            env,
        ),
        Step(
            "responses",
            [llm, "-m", "gw-responses", "--functions", weather, "Weather in Oslo?"],
            ("responses", "stream", "tools"),
            env,
        ),
        Step(
            "structured",
            [llm, "-m", "gw", "--schema", "city, sunny bool", "Weather in Oslo?"],
            ("structured",),
            env,
        ),
        # llm's OpenAI embedding models take no api_base; the openai SDK under them reads
        # OPENAI_BASE_URL and OPENAI_API_KEY.
        Step(
            "embeddings",
            [llm, "embed", "-m", "3-small", "-c", "hello"],
            ("embeddings",),
            {**env, "OPENAI_BASE_URL": ctx.v1, "OPENAI_API_KEY": ctx.key},
        ),
    ]


def _codex(ctx: Ctx) -> list[Step]:
    home = ctx.home / "codex"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(
        f'model = "{MODEL}"\nmodel_provider = "gateway"\n\n'
        "[model_providers.gateway]\n"
        'name = "nanogpt-gateway"\n'
        f'base_url = "{ctx.v1}"\n'
        'env_key = "GATEWAY_KEY"\n'
        'wire_api = "responses"\n'
    )
    argv = [
        str(ctx.npm_bin / "codex"),
        "exec",
        "--skip-git-repo-check",
        "--sandbox",
        "read-only",
        "List the files here",
    ]
    return [
        Step(
            "exec",
            argv,
            ("responses", "stream", "tools"),
            {"CODEX_HOME": str(home), "GATEWAY_KEY": ctx.key},
        )
    ]


def _claude(ctx: Ctx) -> list[Step]:
    env = {
        "ANTHROPIC_BASE_URL": ctx.base,
        "ANTHROPIC_API_KEY": ctx.key,
        "ANTHROPIC_MODEL": CLAUDE,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": CLAUDE,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    argv = [
        str(ctx.npm_bin / "claude"),
        "-p",
        "List the files here",
        "--output-format",
        "json",
        "--tools",
        "Bash,Read",
    ]
    return [Step("print", argv, ("messages", "stream", "tools"), env)]


def _opencode(ctx: Ctx) -> list[Step]:
    config = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            "gateway": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "nanogpt-gateway",
                "options": {"baseURL": ctx.v1, "apiKey": "{env:GATEWAY_KEY}"},
                "models": {MODEL: {"name": "DeepSeek V3.2", "tool_call": True}},
            }
        },
        "model": f"gateway/{MODEL}",
        "autoupdate": False,
        "share": "disabled",
    }
    path = ctx.home / "opencode.json"
    path.write_text(json.dumps(config, indent=2))
    env = {
        "OPENCODE_CONFIG": str(path),
        "GATEWAY_KEY": ctx.key,
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
    }
    argv = [str(ctx.npm_bin / "opencode"), "run", "-m", f"gateway/{MODEL}", "List the files here"]
    return [Step("run", argv, ("chat", "stream", "tools"), env)]


def _cline(ctx: Ctx) -> list[Step]:
    config = str(ctx.home / "cline")
    cline = str(ctx.npm_bin / "cline")
    auth = [
        cline,
        "auth",
        "-p",
        "openai",
        "-k",
        ctx.key,
        "-b",
        ctx.v1,
        "-m",
        MODEL,
        "--config",
        config,
    ]
    run = [cline, "--config", config, "--json", "-t", "60", "List the files here"]
    return [Step("auth", auth, ()), Step("task", run, ("chat", "stream", "tools"))]


def _continue(ctx: Ctx) -> list[Step]:
    path = ctx.home / "continue.yaml"
    model = {
        "name": "gateway",
        "provider": "openai",
        "model": MODEL,
        "apiBase": ctx.v1,
        "apiKey": ctx.key,
        "roles": ["chat"],
        "capabilities": ["tool_use"],
    }
    path.write_text(
        json.dumps(
            {"name": "nanogpt-gateway", "version": "1.0.0", "schema": "v1", "models": [model]}
        )
    )
    argv = [str(ctx.npm_bin / "cn"), "-p", "--config", str(path), "List the files here"]
    return [
        Step(
            "print",
            argv,
            ("chat", "stream", "tools"),
            {"CONTINUE_GLOBAL_DIR": str(ctx.home / "continue")},
        )
    ]


def clients(versions: dict[str, str]) -> list[Client]:
    agent_na = {
        "embeddings": "an agent CLI: no embeddings call",
        "structured": "an agent CLI: no structured-output mode driven",
    }
    return [
        Client(
            "openai-py",
            versions.get("openai", "?"),
            _library("openai_sdk.py"),
            {"messages": "speaks OpenAI only"},
        ),
        Client(
            "langchain-openai",
            versions.get("langchain-openai", "?"),
            _library("langchain_openai_checks.py"),
            {"messages": "speaks OpenAI only"},
        ),
        Client(
            "litellm",
            versions.get("litellm", "?"),
            _library("litellm_checks.py", LITELLM_LOCAL_MODEL_COST_MAP="True"),
            {"messages": "used through its openai/ provider"},
        ),
        Client("llm", versions.get("llm", "?"), _llm, {"messages": "speaks OpenAI only"}),
        Client(
            "openai-js",
            versions.get("npm:openai", "?"),
            _library("openai_sdk.mjs"),
            {"messages": "speaks OpenAI only"},
        ),
        Client(
            "ai-sdk",
            versions.get("npm:ai", "?"),
            _library("ai_sdk.mjs"),
            {"messages": "@ai-sdk/anthropic not driven"},
        ),
        Client(
            "codex",
            versions.get("npm:@openai/codex", "?"),
            _codex,
            {
                "chat": 'wire_api = "responses": streams only',
                "messages": "speaks Responses",
                **agent_na,
            },
        ),
        Client(
            "claude-code",
            versions.get("npm:@anthropic-ai/claude-code", "?"),
            _claude,
            {
                "chat": "speaks Anthropic Messages",
                "responses": "speaks Anthropic Messages",
                **agent_na,
            },
        ),
        Client(
            "opencode",
            versions.get("npm:opencode-ai", "?"),
            _opencode,
            {
                "responses": "@ai-sdk/openai-compatible speaks chat",
                "messages": "configured as OpenAI-compatible",
                **agent_na,
            },
        ),
        Client(
            "cline",
            versions.get("npm:cline", "?"),
            _cline,
            {
                "responses": "its OpenAI Compatible provider speaks chat",
                "messages": "configured as OpenAI-compatible",
                **agent_na,
            },
        ),
        Client(
            "continue",
            versions.get("npm:@continuedev/cli", "?"),
            _continue,
            {
                "responses": "provider openai with apiBase speaks chat",
                "messages": "configured as OpenAI-compatible",
                **agent_na,
            },
        ),
    ]


def pinned() -> dict[str, str]:
    """The versions clients/run installs: package.json (npm) and requirements.txt (PyPI)."""
    found = {
        f"npm:{k}": v
        for k, v in json.loads((HERE / "package.json").read_text())["dependencies"].items()
    }
    for line in (HERE / "requirements.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        found[name.strip()] = version.strip()
    return found
