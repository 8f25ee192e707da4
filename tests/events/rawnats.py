"""The NATS wire protocol by hand over a plain TCP socket, as the `nats` CLI speaks it.

No nats-py here on purpose: this is what a user without our client sends.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit


async def _open(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    info = await reader.readline()
    assert info.startswith(b"INFO "), info
    connect = {"verbose": False, "pedantic": False, "lang": "raw", "version": "0",
               "protocol": 1, "headers": True, "no_responders": True}
    writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
    await writer.drain()
    while True:  # the server may send a second INFO before PONG
        line = await reader.readline()
        if line.startswith(b"PONG"):
            return reader, writer
        assert line.startswith(b"INFO"), line


async def raw_request(url: str, subject: str, payload: bytes,
                      headers: dict[str, str] | None = None) -> bytes:
    """`nats req SUBJECT PAYLOAD [-H k:v]`: PUB/HPUB with a reply inbox, return the reply."""
    reader, writer = await _open(url)
    try:
        inbox = "_INBOX.raw.1"
        writer.write(f"SUB {inbox} 1\r\n".encode())
        if headers:
            head = "NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            hb = head.encode()
            writer.write(f"HPUB {subject} {inbox} {len(hb)} {len(hb) + len(payload)}\r\n"
                         .encode() + hb + payload + b"\r\n")
        else:
            writer.write(f"PUB {subject} {inbox} {len(payload)}\r\n".encode() + payload + b"\r\n")
        await writer.drain()
        while True:
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            if line.startswith(b"PING"):
                writer.write(b"PONG\r\n")
                continue
            if line.startswith(b"MSG "):
                size = int(line.split()[-1])
                data = await reader.readexactly(size + 2)
                return data[:-2]
            if line.startswith(b"HMSG "):
                tokens = line.split()
                header_size, total = int(tokens[-2]), int(tokens[-1])
                data = await reader.readexactly(total + 2)
                return data[header_size:-2]
            assert not line.startswith(b"-ERR"), line
    finally:
        writer.close()
        await writer.wait_closed()


async def raw_publish(url: str, subject: str, payload: bytes) -> None:
    """`nats pub SUBJECT PAYLOAD`: fire and forget (then PING/PONG so it reached the server)."""
    reader, writer = await _open(url)
    try:
        writer.write(f"PUB {subject} {len(payload)}\r\n".encode() + payload + b"\r\nPING\r\n")
        await writer.drain()
        while not (await reader.readline()).startswith(b"PONG"):
            pass
    finally:
        writer.close()
        await writer.wait_closed()
