"""``PARLEY_TLS_CERT`` and ``PARLEY_TLS_KEY``: the node answers HTTPS and WSS only,
with ``Strict-Transport-Security``; the certificate is made here, self-signed."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError
from websockets.asyncio.client import connect

from parley.settings import Settings
from parley.testing.server import ServerThread
from tests.realtime_support import PASSWORD, TIMEOUT, recv, recv_until


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, Path]]:
    data_dir = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(tmp_path_factory.mktemp("certs"))
    with ServerThread(data_dir, rate_limits="off", tls_cert=cert, tls_key=key) as server:
        yield server, cert


async def test_https_and_a_wss_send(tls_node: tuple[ServerThread, Path]) -> None:
    server, cert = tls_node
    trust = ssl.create_default_context(cafile=str(cert))
    base = f"https://127.0.0.1:{server.port}"
    name = f"t{uuid.uuid4().hex[:10]}"
    async with httpx.AsyncClient(base_url=base, verify=trust, timeout=TIMEOUT) as http:
        health = await http.get("/healthz")
        assert health.status_code == 200
        assert health.headers["strict-transport-security"] == "max-age=31536000"
        registered = await http.post(
            "/api/v1/auth/register", json={"username": name, "password": PASSWORD}
        )
        assert registered.status_code == 201
        assert "strict-transport-security" in registered.headers
        tokens = (
            await http.post(
                "/api/v1/auth/token",
                data={"grant_type": "password", "username": name, "password": PASSWORD},
            )
        ).json()
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        created = await http.post("/api/v1/rooms", headers=auth, json={"name": "tls"})
        assert created.status_code == 201, created.text
        room_id = created.json()["id"]
    async with connect(
        f"wss://127.0.0.1:{server.port}/api/v1/ws", ssl=trust, additional_headers=auth
    ) as ws:
        assert (await recv(ws))["type"] == "ready"
        await ws.send(json.dumps({"type": "send", "id": 1, "room_id": room_id, "body": "sealed"}))
        acked = await recv_until(ws, lambda frame: frame["type"] == "ack")
        assert acked[-1]["message"]["body"] == "sealed"


async def test_plain_http_is_not_answered(tls_node: tuple[ServerThread, Path]) -> None:
    server, _ = tls_node
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        with pytest.raises(httpx.HTTPError):
            await http.get(f"http://127.0.0.1:{server.port}/healthz")


def test_a_certificate_needs_its_key(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    with pytest.raises(ValidationError, match="set both or neither"):
        Settings(data_dir=tmp_path, tls_cert=cert)
    with pytest.raises(ValidationError, match="not found"):
        Settings(data_dir=tmp_path, tls_cert=cert, tls_key=tmp_path / "missing.pem")


async def test_no_hsts_without_tls(tmp_path: Path) -> None:
    with ServerThread(tmp_path, rate_limits="off") as server:
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            health = await http.get(f"{server.url}/healthz")
        assert health.status_code == 200
        assert "strict-transport-security" not in health.headers
