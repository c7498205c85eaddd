"""Buyers' endpoints for bench/e2e.py: one lean HTTPS server process (asyncio protocol, keep-alive)
answering 200 to every POST and keeping when each webhook-id first arrived. `GET /arrivals` returns
them as JSON and forgets them. It does not verify signatures (tests do), and runs on uvloop (its TLS
in Cython, not asyncio's Python sslproto): a buyer's CRM runs elsewhere, here it shares the machine,
and the figures should measure the service, not this receiver.

    python bench/webhook_receiver.py PORT CERT_PEM KEY_PEM      (prints "ready" when listening)"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import time
from typing import cast

import uvloop

ARRIVALS: dict[str, float] = {}
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class Endpoint(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            lines = bytes(self.buffer[:end]).split(b"\r\n")
            length, webhook_id = 0, None
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"webhook-id":
                    webhook_id = value.strip().decode()
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            if lines[0].startswith(b"GET /arrivals"):
                body = json.dumps(ARRIVALS).encode()
                ARRIVALS.clear()
                head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                self.transport.write(head % len(body) + body)
            else:
                if webhook_id is not None:
                    ARRIVALS.setdefault(webhook_id, time.time())
                self.transport.write(OK)


async def main(port: int, cert: str, key: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = await asyncio.get_running_loop().create_server(
        Endpoint, "127.0.0.1", port, ssl=context, backlog=1024
    )
    print("ready", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
