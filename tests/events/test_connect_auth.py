"""Connection options against a real nats-server started with auth or TLS: token,
user/password, nkey seed file, and TLS with a CA made in the test. A wrong credential gives the
clear one-line error, never a traceback."""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

import nkeys
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from libs.events.bus import connect
from libs.events.config import BusConfig
from libs.events.errors import BusUnavailable
from tests.harness.nats_server import NatsServer

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


def _write_ca_and_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, as PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trainbus test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = (directory / n for n in ("ca.pem", "server.pem", "key.pem"))
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


async def test_tls_connection(tmp_path: Path) -> None:
    ca, cert, key = _write_ca_and_server_cert(tmp_path)
    conf = f'tls {{ cert_file: "{cert}", key_file: "{key}", ca_file: "{ca}" }}'
    with _server(tmp_path, conf) as server:
        url = f"tls://127.0.0.1:{server.port}"
        await _roundtrip(BusConfig(urls=(url,), tls_ca=str(ca)))
        # Check a client that does not trust the CA is refused with a clear TLS reason.
        with pytest.raises(BusUnavailable, match="cannot reach NATS"):
            await _roundtrip(BusConfig(urls=(server.url,)))
