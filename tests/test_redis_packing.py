"""Commands packed by hiredis (store/redis_packing.py) are byte for byte what redis-py sends."""

import asyncio
from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from billingwatch.store.redis_connect import connect
from billingwatch.store.redis_packing import packed

COMMANDS: list[tuple[Any, ...]] = [
    ("EVALSHA", "a" * 40, 2, "bw:{acct}:counters", "bw:gauges", "evt_1", "charge.succeeded", 1999, -3, 0),
    ("SET", "k", "é€😀", b"\x00\xffbytes", 2**63 - 1, -(2**63), 2**70),
    ("CONFIG GET", "maxmemory-policy"),
    (b"CLIENT KILL", b"ID", b"7"),
    ("HSET", "k", "f", 0.1, "g", 1e20),  # floats: the Python way
    ("SET", "k", memoryview(b"view")),
    ("PING",),
    ("SET", "k", "x" * 100_000),  # above redis-py's buffer cutoff
]


def joined(chunks: list[Any]) -> bytes:
    return b"".join(bytes(chunk) for chunk in chunks)


@pytest.mark.parametrize("command", COMMANDS, ids=range(len(COMMANDS)))
def test_a_command_packs_to_the_bytes_redis_py_sends(command: tuple[Any, ...]) -> None:
    assert joined(packed(Connection)().pack_command(*command)) == joined(Connection().pack_command(*command))


def test_a_pipeline_packs_to_the_bytes_redis_py_sends() -> None:
    assert joined(packed(Connection)().pack_commands(COMMANDS)) == joined(Connection().pack_commands(COMMANDS))


def test_hiredis_packs_the_plain_commands() -> None:
    chunks = packed(Connection)().pack_command(*COMMANDS[0])
    assert len(chunks) == 1  # one C-built buffer, not redis-py's Python-joined pieces


def test_what_redis_py_refuses_is_refused() -> None:
    for value in (True, None, ["a"]):
        with pytest.raises(DataError):
            Connection().pack_command("SET", "k", value)
        with pytest.raises(DataError):
            packed(Connection)().pack_command("SET", "k", value)


def test_another_encoding_is_packed_the_python_way() -> None:
    fast, python = packed(Connection)(encoding="latin-1"), Connection(encoding="latin-1")
    assert joined(fast.pack_command("SET", "k", "é")) == joined(python.pack_command("SET", "k", "é")) == (
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n\xe9\r\n")


def test_the_store_client_round_trips_through_a_real_redis(redis_url: str, redis_prefix: str) -> None:
    async def run() -> tuple[Any, Any, type]:
        client, _ = connect(redis_url)
        try:
            key = f"{redis_prefix}:packing"
            await client.set(key, "é€😀")
            script = "return {ARGV[1], ARGV[2], KEYS[1]}"
            reply = await client.eval(script, 1, key, "évt", -(2**62))
            return await client.get(key), reply, client.connection_pool.connection_class
        finally:
            await client.aclose()

    value, reply, connection_class = asyncio.run(run())
    assert value == "é€😀".encode()
    assert reply == ["évt".encode(), str(-(2**62)).encode(), f"{redis_prefix}:packing".encode()]
    assert connection_class is packed(Connection)
