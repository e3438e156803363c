"""The rate limiter's pipelined RESP2 connection: framing, ordering, failures, real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis.asyncio as aioredis

from novaza_gateway.core.resp import (
    ConnectionClosed,
    PipelinedRedis,
    RespError,
    Script,
    encode_command,
    parse_reply,
)


def test_commands_are_encoded_as_resp_arrays_of_bulk_strings() -> None:
    assert encode_command("GET", "k") == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    assert (
        encode_command("SET", b"\x00\r\n", 7) == b"*3\r\n$3\r\nSET\r\n$3\r\n\x00\r\n\r\n$1\r\n7\r\n"
    )


def test_replies_parse_whole_or_not_at_all() -> None:
    wire = b"*4\r\n:1\r\n+OK\r\n$5\r\nhel\r\n\r\n$-1\r\n:7\r\n"
    value, end = parse_reply(wire) or (None, 0)
    assert value == [1, "OK", b"hel\r\n", None]
    assert parse_reply(wire, end) == (7, len(wire))
    for cut in range(1, end):  # every prefix of the array is incomplete, never misread
        assert parse_reply(wire[:cut]) is None
    error, _ = parse_reply(b"-NOSCRIPT No matching script\r\n") or (None, 0)
    assert isinstance(error, RespError) and str(error).startswith("NOSCRIPT")
    with pytest.raises(RespError):
        parse_reply(b"!weird\r\n")


def test_only_redis_urls_are_taken() -> None:
    client = PipelinedRedis.from_url("rediss://u:p%40ss@cache.internal:6380/4", timeout=0.1)
    assert (client.host, client.port, client.db) == ("cache.internal", 6380, 4)
    for url in ("unix:///run/redis.sock", "http://cache:6379", "redis://"):
        with pytest.raises(ValueError):
            PipelinedRedis.from_url(url, timeout=0.1)


async def test_against_redis_scripts_load_themselves_and_databases_are_selected(
    redis_url: str,
) -> None:
    base = redis_url.rsplit("/", 1)[0]
    client = PipelinedRedis.from_url(f"{base}/3", timeout=1.0)
    reference = aioredis.Redis.from_url(f"{base}/3")
    key = f"novaza:test:{uuid.uuid4().hex}"
    script = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    try:
        await reference.script_flush()  # NOSCRIPT first: the client falls back to EVAL
        assert await client.eval_script(script, [key], ["5"]) == 5
        assert await client.eval_script(script, [key], ["2"]) == 7  # now by EVALSHA
        assert int(await reference.get(key) or 0) == 7  # in database 3, as the URL says
        with pytest.raises(RespError, match="unknown command"):
            await client.execute("NO-SUCH-COMMAND")
        assert await client.execute("PING") == "PONG"  # an error reply breaks nothing
    finally:
        await reference.delete(key)
        await reference.aclose()
        await client.aclose()


async def test_a_killed_connection_fails_its_callers_and_the_next_call_reconnects(
    redis_url: str,
) -> None:
    client = PipelinedRedis.from_url(redis_url, timeout=1.0)
    admin = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.execute("CLIENT", "SETNAME", "novaza-resp-test") == "OK"
        blocked = asyncio.ensure_future(client.execute("BLPOP", uuid.uuid4().hex, 5))
        await asyncio.sleep(0.05)
        await admin.execute_command("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
        with pytest.raises(ConnectionClosed):
            await blocked
        assert await client.execute("PING") == "PONG"
    finally:
        await admin.aclose()
        await client.aclose()


async def test_a_reply_that_comes_after_its_caller_gave_up_goes_to_nobody() -> None:
    """Replies are matched by order: a late one must not be handed to the next caller."""
    release = asyncio.Event()

    async def slow_then_fast(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"first\r\n")
        await release.wait()
        writer.write(b"$5\r\nfirst\r\n")
        await reader.readuntil(b"second\r\n")
        writer.write(b"$6\r\nsecond\r\n")
        await writer.drain()
        await reader.read()

    server = await asyncio.start_server(slow_then_fast, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = PipelinedRedis("127.0.0.1", port, timeout=0.1)
    try:
        with pytest.raises(TimeoutError):
            await client.execute("ECHO", "first")
        release.set()
        assert await client.execute("ECHO", "second") == b"second"
    finally:
        await client.aclose()
        server.close()


def test_on_uvloop_as_novaza_serve_runs_it(redis_url: str) -> None:
    """uvloop's transports differ from asyncio's (they are not ``asyncio.Transport``)."""
    import uvloop

    async def ping_twice() -> list[object]:
        client = PipelinedRedis.from_url(redis_url, timeout=1.0)
        try:
            return list(await asyncio.gather(client.execute("PING"), client.execute("ECHO", "x")))
        finally:
            await client.aclose()

    assert uvloop.run(ping_twice()) == ["PONG", b"x"]


async def _ping_through_a_stalled_loop(redis_url: str) -> object:
    client = PipelinedRedis.from_url(redis_url, timeout=0.02)
    try:
        await client.execute("PING")  # connected
        pending = asyncio.ensure_future(client.execute("PING"))
        for _ in range(3):  # the task sends; the write leaves on the next turn
            await asyncio.sleep(0)
        time.sleep(0.5)  # the loop is stuck 25 deadlines long; Redis answers meanwhile, even
        # on a machine so loaded that Redis needs 100 ms for a PING
        return await pending
    finally:
        await client.aclose()


async def test_a_stalled_event_loop_is_not_mistaken_for_a_slow_redis(redis_url: str) -> None:
    assert await _ping_through_a_stalled_loop(redis_url) == "PONG"


def test_a_stalled_uvloop_is_not_mistaken_for_a_slow_redis(redis_url: str) -> None:
    import uvloop

    assert uvloop.run(_ping_through_a_stalled_loop(redis_url)) == "PONG"
