"""AI generation throughput: the gateway's engine against llama.cpp called directly, same run.

Three ways to generate the same N tokens from the same prompt with the same model file and
llama.cpp settings (greedy, end-of-sequence ignored so every run generates exactly N):

- ``direct``: ``llama_cpp.Llama.create_completion`` in this process, the prompt rendered by
  the GGUF's chat template: what llama-cpp-python gives on its own.
- ``engine``: the gateway's ``InferenceEngine`` in this process (worker thread, queue, events
  to the event loop, token-by-token ``Llama.generate``), no HTTP.
- ``gateway``: a ``novaza serve`` process over HTTP, non-streamed and streamed (time to first
  token), authenticated, quota-checked and metered like any tenant call.

Then ``concurrent``: C clients at once on the gateway (one worker: they queue), aggregate
tokens/s and latency. The rounds alternate direct / engine / gateway so drift hits all three.

Run: ``python benchmarks/ai.py [--tokens 128] [--rounds 5] [--clients 4]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from readiness import wait_healthy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import free_port

from novaza_gateway.ai.engine import ChatMessage, Finished, GenerationRequest, InferenceEngine
from novaza_gateway.ai.llama import LlamaCppModel, packaged_model_path, weight_repacking
from novaza_gateway.config import Settings
from novaza_gateway.core import devkeys

NOVAZA = [sys.executable, "-m", "novaza_gateway"]
MODEL = "smollm2-135m-instruct"
PROMPT = "Summarize: 64 year old man, chest pain for two hours, ECG normal, troponin pending."


def direct_llama(tokens: int) -> tuple[object, list[int], dict[int, float]]:
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    config = Settings().ai
    with weight_repacking(config.repack_weights):
        llm = llama_cpp.Llama(
            model_path=str(packaged_model_path()),
            n_ctx=config.context_size,
            n_threads=config.threads,
            verbose=False,
        )
    template = llm.metadata["tokenizer.chat_template"]
    formatter = Jinja2ChatFormatter(template=template, eos_token="<|im_end|>", bos_token="")
    prompt = formatter(messages=[{"role": "user", "content": PROMPT}]).prompt
    prompt_tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    banned = {t: -1e9 for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)}
    return llm, prompt_tokens, banned


def run_direct(llm: object, prompt: list[int], banned: dict[int, float], tokens: int) -> float:
    begin = time.perf_counter()
    out = llm.create_completion(  # type: ignore[attr-defined]
        prompt, max_tokens=tokens, temperature=0, logit_bias=banned
    )
    elapsed = time.perf_counter() - begin
    assert out["usage"]["completion_tokens"] == tokens, out["usage"]
    return tokens / elapsed


async def run_engine(engine: InferenceEngine, tokens: int) -> float:
    request = GenerationRequest(
        (ChatMessage("user", PROMPT),), max_tokens=tokens, temperature=0, ignore_eos=True
    )
    begin = time.perf_counter()
    ending = None
    async for event in engine.submit(request).events():
        ending = event
    elapsed = time.perf_counter() - begin
    assert isinstance(ending, Finished) and ending.usage.completion_tokens == tokens, ending
    return tokens / elapsed


def body(tokens: int, stream: bool = False) -> dict[str, object]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": stream,
    }


async def run_gateway(client: httpx.AsyncClient, tokens: int) -> float:
    begin = time.perf_counter()
    response = await client.post("/ai/chat/completions", json=body(tokens))
    elapsed = time.perf_counter() - begin
    response.raise_for_status()
    assert response.json()["usage"]["completion_tokens"] == tokens
    return tokens / elapsed


async def run_stream(client: httpx.AsyncClient, tokens: int) -> tuple[float, float]:
    begin = time.perf_counter()
    first = 0.0
    async with client.stream("POST", "/ai/chat/completions", json=body(tokens, True)) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if not first and '"content":"' in line and '"content":""' not in line:
                first = time.perf_counter() - begin
    return tokens / (time.perf_counter() - begin), first * 1000


async def run_concurrent(client: httpx.AsyncClient, tokens: int, clients: int) -> str:
    async def one() -> float:
        begin = time.perf_counter()
        (await client.post("/ai/chat/completions", json=body(tokens))).raise_for_status()
        return time.perf_counter() - begin

    begin = time.perf_counter()
    latencies = sorted(await asyncio.gather(*(one() for _ in range(clients))))
    wall = time.perf_counter() - begin
    return (
        f"| concurrent x{clients} | {clients * tokens / wall:.1f} aggregate | "
        f"latency min {latencies[0]:.2f} s, max {latencies[-1]:.2f} s |"
    )


def start_gateway(data_dir: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVAZA_")}
    env.update(
        NOVAZA_DATA_DIR=str(data_dir),
        NOVAZA_PORT=str(port),
        NOVAZA_LOG_LEVEL="WARNING",
        NOVAZA_AI_PRELOAD="true",
    )
    for args in (["migrate"], ["tenants", "create", "bench", "--name", "B", "--activate"]):
        subprocess.run([*NOVAZA, *args], env=env, check=True, capture_output=True, timeout=120)
    admin = devkeys.mint_token(data_dir, subject="bench", scopes=["platform:admin"], tenant=None)
    proc = subprocess.Popen(
        [*NOVAZA, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base, proc, timeout=60)
    httpx.put(  # no rate limit in the way
        f"{base}/admin/tenants/bench",
        json={"rateLimit": {"ratePerSecond": 100000, "burst": 100000}},
        headers={"Authorization": f"Bearer {admin}"},
    ).raise_for_status()
    token = devkeys.mint_token(data_dir, subject="bench", scopes=["ai:use"], tenant="bench")
    return proc, token


async def main(tokens: int, rounds: int, clients: int) -> None:
    llm, prompt, banned = direct_llama(tokens)
    config = Settings().ai
    engine = InferenceEngine(
        LlamaCppModel(packaged_model_path(), config),  # type: ignore[arg-type]
        queue_size=16,
        timeout_seconds=600,
        name=MODEL,
    )
    with tempfile.TemporaryDirectory() as tmp:
        proc, token = start_gateway(Path(tmp) / "data", port := free_port())
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=600
            ) as client:
                run_direct(llm, prompt, banned, 8)  # warm-ups
                await run_engine(engine, 8)
                await run_gateway(client, 8)
                rates: dict[str, list[float]] = {"direct": [], "engine": [], "gateway": []}
                streams: list[tuple[float, float]] = []
                for _ in range(rounds):
                    rates["direct"].append(run_direct(llm, prompt, banned, tokens))
                    rates["engine"].append(await run_engine(engine, tokens))
                    rates["gateway"].append(await run_gateway(client, tokens))
                    streams.append(await run_stream(client, tokens))
                concurrent = await run_concurrent(client, tokens, clients)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            await engine.stop()
    print(f"{tokens} tokens per request, {rounds} rounds, median (min-max) tokens/s")
    print("| path | tokens/s | notes |\n|---|---|---|")
    base = statistics.median(rates["direct"])
    for name, values in rates.items():
        median = statistics.median(values)
        print(
            f"| {name} | {median:.1f} ({min(values):.1f}-{max(values):.1f}) | "
            f"{median / base:.2f}x direct |"
        )
    stream_rates = [r for r, _ in streams]
    ttft = statistics.median(t for _, t in streams)
    print(
        f"| gateway, streamed | {statistics.median(stream_rates):.1f} | "
        f"first token {ttft:.0f} ms (median) |"
    )
    print(concurrent)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(main(args.tokens, args.rounds, args.clients))
