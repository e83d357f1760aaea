"""Expose servers bound to 127.0.0.1 on the cluster bridge: `python -m devtools.forward
LISTEN_HOST:PORT=TARGET_HOST:PORT ...`.

Pods cannot reach the host's loopback, and kube-apiserver and weed listen on one
address only; this TCP relay (bytes in, bytes out: TLS passes through untouched)
makes them reachable on HOST_ADDRESS without binding anything to 0.0.0.0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
from dataclasses import dataclass

CHUNK = 65536


@dataclass(frozen=True)
class Forward:
    listen_host: str
    listen_port: int
    target_host: str
    target_port: int

    @classmethod
    def parse(cls, text: str) -> Forward:
        """`10.200.0.1:6443=127.0.0.1:6443`."""
        listen, target = text.split("=", 1)
        listen_host, listen_port = listen.rsplit(":", 1)
        target_host, target_port = target.rsplit(":", 1)
        return cls(listen_host, int(listen_port), target_host, int(target_port))

    def __str__(self) -> str:
        return f"{self.listen_host}:{self.listen_port}={self.target_host}:{self.target_port}"


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def relay(
    forward: Forward, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
) -> None:
    try:
        target_reader, target_writer = await asyncio.open_connection(
            forward.target_host, forward.target_port
        )
    except OSError:
        client_writer.close()
        return
    try:
        await asyncio.gather(pipe(client_reader, target_writer), pipe(target_reader, client_writer))
    finally:
        for writer in (client_writer, target_writer):
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


async def serve(forwards: list[Forward]) -> None:
    servers = [
        await asyncio.start_server(
            functools.partial(relay, forward), forward.listen_host, forward.listen_port
        )
        for forward in forwards
    ]
    for forward in forwards:
        print(f"[forward] {forward}", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("forwards", nargs="+", type=Forward.parse)
    asyncio.run(serve(parser.parse_args().forwards))


if __name__ == "__main__":
    main()
