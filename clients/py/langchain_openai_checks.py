"""`langchain-openai` through the gateway: `ChatOpenAI` (Chat Completions, and the Responses API
with `use_responses_api=True`) and `OpenAIEmbeddings`. One check per run (argv[1])."""

from __future__ import annotations

import os
import sys

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel

SETTINGS = {
    "base_url": os.environ["GATEWAY_BASE_URL"],
    "api_key": os.environ["GATEWAY_KEY"],
    "max_retries": 0,
}
MODEL = os.environ["GATEWAY_MODEL"]


@tool
def lookup_weather(city: str) -> str:
    """Current weather in a city."""
    return "Sunny"


def chat() -> str:
    return str(ChatOpenAI(model=MODEL, **SETTINGS).invoke("Weather in Oslo?").content)


def stream() -> str:
    llm = ChatOpenAI(model=MODEL, stream_usage=True, **SETTINGS)
    return "".join(str(chunk.content) for chunk in llm.stream("Weather in Oslo?"))


def _loop(llm: ChatOpenAI) -> str:
    bound = llm.bind_tools([lookup_weather])
    messages: list = [HumanMessage("Weather in Oslo?")]
    first = bound.invoke(messages)
    [call] = first.tool_calls
    messages += [first, ToolMessage(lookup_weather.invoke(call["args"]), tool_call_id=call["id"])]
    text = bound.invoke(messages).text
    assert "Sunny" in text, text
    return text


def tools() -> str:
    return _loop(ChatOpenAI(model=MODEL, **SETTINGS))


def responses() -> str:
    return _loop(ChatOpenAI(model=MODEL, use_responses_api=True, streaming=True, **SETTINGS))


class Weather(BaseModel):
    city: str
    sunny: bool


def structured() -> str:
    llm = ChatOpenAI(model=MODEL, **SETTINGS).with_structured_output(Weather)
    answer = llm.invoke("Weather in Oslo?")
    assert isinstance(answer, Weather), answer
    return answer.model_dump_json()


def embeddings() -> str:
    # check_embedding_ctx_length=False: the default tokenizes with tiktoken, which downloads its
    # encodings and sends token ids; NanoGPT's embeddings take text.
    embedder = OpenAIEmbeddings(
        model="text-embedding-3-small", check_embedding_ctx_length=False, **SETTINGS
    )
    return f"{len(embedder.embed_query('hello'))} dimensions"


if __name__ == "__main__":
    answer = globals()[sys.argv[1]]()
    assert answer, "empty answer"
    print(answer)
