"""Commands packed in C: redis-py's asyncio connections build the RESP bytes of every command in
Python (its sync connections use hiredis), about a quarter of `replay --direct`'s CPU with one
batch call of thousands of arguments. `packed(cls)` is `cls` with hiredis.pack_command, passed
to redis-py as its public `connection_class`; the bytes sent are the same (tests/test_redis_packing.py).
"""

from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import DataError

# What hiredis packs exactly as redis-py's Encoder does (UTF-8, decimal integers). Anything else
# (floats: repr() against "%.17g"; bool: refused by both, with different errors; memoryview)
# goes the Python way, so every command is sent exactly as before.
_AS_ENCODER = frozenset({str, bytes, int})


class _HiredisPacking(AbstractConnection):
    def pack_command(self, *args: Any) -> list[bytes]:
        if self.encoder.encoding != "utf-8" or self.encoder.encoding_errors != "strict":
            return super().pack_command(*args)
        first = args[0]
        # As redis-py: a command name with spaces ("CONFIG GET") is several arguments.
        if isinstance(first, str):
            args = (*first.encode().split(), *args[1:])
        elif isinstance(first, bytes) and b" " in first:
            args = (*first.split(), *args[1:])
        for arg in args:
            if type(arg) not in _AS_ENCODER:
                return super().pack_command(*args)
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:
            raise DataError(str(exc)) from exc


_PACKED: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def packed(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """`connection_class` packing its commands with hiredis (one class per base, reused)."""
    if connection_class not in _PACKED:
        _PACKED[connection_class] = type(f"Hiredis{connection_class.__name__}", (_HiredisPacking, connection_class), {})
    return _PACKED[connection_class]
