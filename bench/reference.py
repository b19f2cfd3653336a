"""The two reference servers the ingest benchmark compares the exporter with.

`bare`: read the body and parse it, nothing else: the ceiling of Starlette on uvicorn here.
`one_round_trip`: the same plus one Redis script call (dedup SET NX + one HINCRBY): the
ceiling of any design that answers after one round trip to Redis, as the exporter does.
Run as uvicorn factories: `uvicorn --factory bench.reference:bare`.
"""

import json
import os

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

_SCRIPT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 1 end
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
return 0
"""


def bare() -> Starlette:
    async def webhook(request: Request) -> JSONResponse:
        event = json.loads(await request.body())
        return JSONResponse({"received": True, "type": event["type"]})

    return Starlette(routes=[Route("/webhooks/stripe", webhook, methods=["POST"])])


def one_round_trip() -> Starlette:
    client = aioredis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    script = client.register_script(_SCRIPT)

    async def webhook(request: Request) -> JSONResponse:
        event = json.loads(await request.body())
        duplicate = await script(keys=["{ref}:e:" + event["id"], "{ref}:counters"], args=[3024000, event["type"]])
        return JSONResponse({"received": True, "duplicate": bool(duplicate)})

    return Starlette(routes=[Route("/webhooks/stripe", webhook, methods=["POST"])])
