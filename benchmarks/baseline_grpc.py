"""`python -m benchmarks.baseline_grpc`: the bare grpc.aio server the Publish benchmarks compare with.

One generic handler for `/eventbus.v1.EventBus/Publish` that parses the same `PublishRequest` (with the
generated message class) and answers an empty `PublishResponse` without doing anything else: no validation,
no store, no logging per call. The load client is the same code for both. It logs one JSON line
`{"event": "server_ready", "grpc": "127.0.0.1:PORT"}` on stderr, like `eventbus serve`, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

import grpc

from eventbus.v1 import eventbus_pb2 as pb

# The same message limits as the eventbus server.
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
]


async def publish(request: pb.PublishRequest, context: Any) -> pb.PublishResponse:
    return pb.PublishResponse()


async def serve(listen: str) -> int:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    handler = grpc.method_handlers_generic_handler(
        "eventbus.v1.EventBus",
        {
            "Publish": grpc.unary_unary_rpc_method_handler(
                publish,
                request_deserializer=pb.PublishRequest.FromString,
                response_serializer=pb.PublishResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(listen)
    if port == 0:
        print(json.dumps({"event": "listen_failed", "grpc": listen}), file=sys.stderr, flush=True)
        return 1
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    host = listen.rpartition(":")[0]
    ready = {"event": "server_ready", "grpc": f"{host}:{port}", "loop": type(loop).__module__.split(".")[0]}
    print(json.dumps(ready), file=sys.stderr, flush=True)
    await stop.wait()
    await server.stop(1.0)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baseline_grpc", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT, port 0 picks one")
    args = parser.parse_args()
    if not args.listen.startswith("127.0.0.1:"):
        parser.error("--listen must be on 127.0.0.1: this machine is shared")
    return asyncio.run(serve(args.listen))


if __name__ == "__main__":
    raise SystemExit(main())
