"""Credentials and TLS from the URL, against private servers that require them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from synaptic_mesh import AgentActor, Node, TransportClosed, on
from tests.transports.test_nats_helpers import private_server


class Upper(AgentActor):
    @on(str)
    async def upper(self, msg: str) -> str:
        return msg.upper()


async def round_trip(url: str) -> str:
    async with Node(url, name="server") as b, Node(url, name="client") as a:
        await b.spawn(Upper, "core.upper")
        return await a.ask("core.upper", "secured", timeout=5)  # type: ignore[no-any-return]


async def test_user_and_password_from_the_url() -> None:
    async with private_server("--user", "alice", "--pass", "s3cret") as server:
        assert await round_trip(f"nats://alice:s3cret@{server.url}") == "SECURED"
        with pytest.raises(TransportClosed, match="cannot connect to NATS"):
            await round_trip(f"nats://alice:wrong@{server.url}?reconnect_wait=0.01")


async def test_token_from_the_url() -> None:
    async with private_server("--auth", "tok123") as server:
        assert await round_trip(f"nats://tok123@{server.url}") == "SECURED"
        assert await round_trip(f"nats://{server.url}?token=tok123") == "SECURED"


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA), with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


async def test_tls_with_the_ca_from_the_url(tmp_path: Any) -> None:
    cert, key = make_certificate(tmp_path)
    async with private_server("--tls", "--tlscert", str(cert), "--tlskey", str(key)) as server:
        assert await round_trip(f"nats://{server.url}?tls_ca={cert}") == "SECURED"
        with pytest.raises(TransportClosed, match="cannot connect to NATS"):
            await round_trip(f"nats://{server.url}?tls=1&reconnect_wait=0.01")  # unknown CA
