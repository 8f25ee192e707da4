"""Connection options against a real nats-server started with auth or TLS: token,
user/password, nkey seed file, and TLS with a CA made in the test. A wrong credential gives the
clear one-line error, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import nkeys
import pytest

from libs.events.bus import connect
from libs.events.config import BusConfig
from libs.events.errors import BusUnavailable
from tests.harness.nats_server import NatsServer
from tests.harness.tls import make_tls

pytestmark = pytest.mark.anyio

# The server sends -ERR 'Authorization Violation' and closes; the client sometimes sees the
# close (a reset) before it reads the -ERR line.
AUTH_REFUSED = "cannot reach NATS at .*(authorization violation|connection reset)"


def _server(tmp_path: Path, config_text: str) -> NatsServer:
    conf = tmp_path / "server.conf"
    conf.write_text(config_text)
    return NatsServer(tmp_path / "store", extra_args=("-c", str(conf)))


async def _roundtrip(config: BusConfig) -> None:
    bus = await connect(config)
    try:
        # Check a real request/response works on the authenticated connection.
        assert bus.nc.is_connected
        await bus.nc.flush(timeout=5)
    finally:
        await bus.close()


async def test_token_auth(tmp_path: Path) -> None:
    with _server(tmp_path, 'authorization { token: "s3cret-token" }') as server:
        await _roundtrip(BusConfig(urls=(server.url,), token="s3cret-token"))
        with pytest.raises(BusUnavailable, match=AUTH_REFUSED):
            await _roundtrip(BusConfig(urls=(server.url,), token="wrong"))


async def test_user_password_auth(tmp_path: Path) -> None:
    conf = 'authorization { users = [ { user: "alice", password: "pw-alice" } ] }'
    with _server(tmp_path, conf) as server:
        await _roundtrip(BusConfig(urls=(server.url,), user="alice", password="pw-alice"))
        with pytest.raises(BusUnavailable, match=AUTH_REFUSED) as caught:
            await _roundtrip(BusConfig(urls=(server.url,), user="alice", password="nope"))
        # Check the secret is never echoed in the error.
        assert "nope" not in str(caught.value)
        # Check anonymous connections are refused.
        with pytest.raises(BusUnavailable):
            await _roundtrip(BusConfig(urls=(server.url,)))


async def test_nkey_seed_file_auth(tmp_path: Path) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(seed).public_key.decode()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed)
    seed_file.chmod(0o600)
    conf = f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}'
    with _server(tmp_path, conf) as server:
        await _roundtrip(BusConfig(urls=(server.url,), nkey_seed_file=str(seed_file)))
        with pytest.raises(BusUnavailable):
            await _roundtrip(BusConfig(urls=(server.url,)))


async def test_tls_connection(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    conf = f'tls {{ cert_file: "{tls.cert}", key_file: "{tls.key}", ca_file: "{tls.ca}" }}'
    with _server(tmp_path, conf) as server:
        url = f"tls://127.0.0.1:{server.port}"
        await _roundtrip(BusConfig(urls=(url,), tls_ca=str(tls.ca)))
        # Check a client that does not trust the CA is refused with a clear TLS reason.
        with pytest.raises(BusUnavailable, match="cannot reach NATS"):
            await _roundtrip(BusConfig(urls=(server.url,)))
