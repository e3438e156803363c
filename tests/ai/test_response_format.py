"""``response_format`` (JSON mode, structured outputs) through the official OpenAI SDK, with the
real SmolLM2 model constrained by a llama.cpp grammar; passed through to an upstream."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import openai
import pytest

from novaza_gateway.ai.grammar import GrammarCache
from tests.ai.conftest import MODEL, AiGateway, outstanding, over_tcp, with_tenant
from tests.conftest import gateway_settings, start_gateway

TRIAGE = [
    {"role": "system", "content": "You triage nurse notes. Answer in JSON."},
    {"role": "user", "content": "Patient has chest pain and low blood pressure. Urgent?"},
]
ASK_JSON = [  # greedy, SmolLM2 closes this object in about 30 tokens
    {"role": "system", "content": "You triage nurse notes. Answer in JSON."},
    {
        "role": "user",
        "content": "Chest pain and low blood pressure. "
        'Answer {"urgent": true} or {"urgent": false}.',
    },
]
URGENT = {
    "type": "object",
    "properties": {"urgent": {"type": "boolean"}},
    "required": ["urgent"],
    "additionalProperties": False,
}
LEVEL = {
    "type": "object",
    "properties": {"level": {"type": "string", "enum": ["red", "amber", "green"]}},
    "required": ["level"],
    "additionalProperties": False,
}


def schema_format(schema: dict[str, Any], name: str = "triage") -> Any:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def grammars(ai: AiGateway) -> GrammarCache:
    cache: GrammarCache = ai.gw.app.state.ai.registry.get(MODEL).engine.model.grammars
    return cache


async def test_json_object_answers_one_json_object(ai_lite: AiGateway) -> None:
    client = ai_lite.sdk()
    free = await client.chat.completions.create(
        model=MODEL, messages=ASK_JSON, max_tokens=48, temperature=0
    )
    assert not _is_json_object(free.choices[0].message.content or "")  # the grammar's work
    answer = await client.chat.completions.create(
        model=MODEL,
        messages=ASK_JSON,
        max_tokens=48,
        temperature=0,
        response_format={"type": "json_object"},
    )
    [choice] = answer.choices
    assert choice.finish_reason == "stop", choice.message.content
    assert isinstance(json.loads(choice.message.content or ""), dict)


@pytest.mark.parametrize(
    ("schema", "check"),
    [
        (URGENT, lambda value: isinstance(value["urgent"], bool)),
        (LEVEL, lambda value: value["level"] in ("red", "amber", "green")),
    ],
    ids=["boolean", "enum"],
)
async def test_json_schema_answers_conform(
    ai_lite: AiGateway, schema: dict[str, Any], check: Any
) -> None:
    answer = await ai_lite.sdk().chat.completions.create(
        model=MODEL,
        messages=TRIAGE,
        max_tokens=24,
        temperature=0.7,
        seed=3,
        response_format=schema_format(schema),
    )
    [choice] = answer.choices
    assert choice.finish_reason == "stop", choice.message.content
    value = json.loads(choice.message.content or "")
    assert isinstance(value, dict) and set(value) == set(schema["required"]), value
    assert check(value), value


async def test_streamed_json_object_chunks_join_into_json(ai_lite: AiGateway) -> None:
    stream = await ai_lite.sdk().chat.completions.create(
        model=MODEL,
        messages=ASK_JSON,
        max_tokens=48,
        temperature=0,
        response_format={"type": "json_object"},
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert sum(bool(p) for p in pieces) > 3  # streamed token by token, not in one piece
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert isinstance(json.loads("".join(pieces)), dict)


async def test_max_tokens_cuts_the_object_with_length(ai_lite: AiGateway) -> None:
    answer = await ai_lite.sdk().chat.completions.create(
        model=MODEL,
        messages=TRIAGE,
        max_tokens=2,
        temperature=0,
        response_format={"type": "json_object"},
    )
    [choice] = answer.choices
    assert choice.finish_reason == "length"
    assert (choice.message.content or "").startswith("{")  # cut: not valid JSON, as OpenAI's


@pytest.mark.parametrize(
    ("response_format", "path"),
    [
        ({"type": "xml"}, "response_format"),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "response_format"),
        ({"type": "json_schema"}, "response_format"),
        (schema_format({"type": "frobnicate"}), "response_format.json_schema.schema"),
        (schema_format({"type": "string", "pattern": "a+"}), "response_format.json_schema.schema"),
        (
            schema_format({"type": "string", "minLength": 1_000_000}),
            "response_format.json_schema.schema",
        ),
    ],
    ids=["unknown-type", "no-schema", "no-json_schema", "unknown-schema", "pattern", "huge"],
)
async def test_bad_response_format_is_validation_failed(
    ai_lite: AiGateway, response_format: Any, path: str
) -> None:
    for stream in (False, True):
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            await ai_lite.sdk().chat.completions.create(
                model=MODEL,
                messages=TRIAGE,
                max_tokens=8,
                response_format=response_format,
                stream=stream,
            )
        error = caught.value.body
        assert isinstance(error, dict) and error["code"] == "VALIDATION_FAILED", error
        assert error["details"]["errors"][0]["path"].startswith(path), error
    assert outstanding(ai_lite) == 0  # refused before any token was reserved


async def test_the_same_schema_builds_its_grammar_once(ai_lite: AiGateway) -> None:
    cache = grammars(ai_lite)
    builds, hits = cache.builds, cache.hits
    for _ in range(2):
        answer = await ai_lite.sdk().chat.completions.create(
            model=MODEL,
            messages=TRIAGE,
            max_tokens=24,
            temperature=0,
            response_format=schema_format(LEVEL),
        )
        assert json.loads(answer.choices[0].message.content or "")["level"]
    assert cache.builds == builds + 1
    assert cache.hits >= hits + 3  # request 1: start; request 2: admission and start
    assert cache.build_seconds < 0.5
    bad = schema_format({"type": "frobnicate"})
    for _ in range(2):  # a refusal is cached as well
        with pytest.raises(openai.UnprocessableEntityError):
            await ai_lite.sdk().chat.completions.create(
                model=MODEL, messages=TRIAGE, max_tokens=8, response_format=bad
            )
    assert cache.builds == builds + 2


async def test_an_upstream_receives_response_format_unchanged(
    ai_lite: AiGateway, tmp_path: Path, sqlite_template: Path
) -> None:
    """The relaying gateway builds no grammar: the upstream (this gateway, over TCP) does."""
    relay_db = tmp_path / "relay" / "novaza.db"
    relay_db.parent.mkdir(parents=True)
    shutil.copy(sqlite_template, relay_db)
    async with over_tcp(ai_lite.gw.app) as url:
        settings = gateway_settings(
            tmp_path / "relay",
            f"sqlite:///{relay_db}",
            ai_upstream_url=f"{url}/ai",
            ai_upstream_api_key=ai_lite.token(),
            ai_upstream_models=f"remote-smol={MODEL}",
        )
        async for gw in start_gateway(settings):
            relaying = await with_tenant(gw)
            builds = grammars(ai_lite).builds
            answer = await relaying.sdk().chat.completions.create(
                model="remote-smol",
                messages=TRIAGE,
                max_tokens=24,
                temperature=0,
                response_format=schema_format(URGENT, name="relayed"),
            )
            value = json.loads(answer.choices[0].message.content or "")
            assert isinstance(value, dict) and isinstance(value["urgent"], bool), value
            assert grammars(ai_lite).builds == builds + 1  # built upstream
            assert grammars(relaying).builds == 0  # not by the relay


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
