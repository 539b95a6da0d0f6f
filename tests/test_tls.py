"""HTTPS with `--ssl-certfile/--ssl-keyfile`, using a self-signed certificate made here."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from berth.cli.main import cli
from berth.registry import Registry
from tests.fakes import register_fake
from tests.servers import berth_server


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.e2e
def test_serves_https_with_hsts(registry: Registry, tmp_path: Path) -> None:
    register_fake(registry, "alpha")
    cert, key = _self_signed(tmp_path)
    args = ("--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    with berth_server(registry.root, *args, ca=cert) as server:
        assert server.url.startswith("https://")
        verify = ssl.create_default_context(cafile=str(cert))
        response = httpx.post(f"{server.url}/predict", json={"features": [1, 2, 3]}, verify=verify)
        assert response.status_code == 200
        assert response.json()["prediction"] == 6.0
        assert response.headers["strict-transport-security"] == "max-age=31536000"
        with pytest.raises(httpx.ConnectError):  # an unverified certificate is refused
            httpx.get(f"{server.url}/health")
        plain = f"http://127.0.0.1:{server.port}/health"
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
            httpx.get(plain)


def test_one_tls_file_alone_is_refused(registry: Registry, tmp_path: Path) -> None:
    register_fake(registry, "alpha")
    cert, _ = _self_signed(tmp_path)
    result = CliRunner().invoke(
        cli, ["--registry", str(registry.root), "serve", "--ssl-certfile", str(cert)]
    )
    assert result.exit_code == 1
    assert "both --ssl-certfile and --ssl-keyfile" in result.output
