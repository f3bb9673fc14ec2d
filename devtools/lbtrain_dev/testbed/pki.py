"""Certificates and keys for a local control plane: a CA, the API server's serving cert, and the
service-account signing key (needed for the TokenRequest API, which issue #6's RBAC checks use).

For a real node the same CA also signs the kubelet's serving cert and the API server's client
cert to the kubelet: the kubelet then accepts only the API server (x509 authentication), so
`kubectl logs` works without opening the kubelet's API to every pod on the bridge.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _leaf(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    sans: list[x509.GeneralName],
    *,
    organization: str | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    now = dt.datetime.now(dt.UTC)
    key = _key()
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def write_pki(folder: Path, node_ip: str | None = None) -> None:
    """Write ca.crt, apiserver.{crt,key}, sa.{key,pub} into `folder` (mode 0600 for keys).

    With `node_ip` (the address the API server and a real node's kubelet serve on), also
    kubelet.{crt,key}, apiserver-kubelet-client.{crt,key}, front-proxy-client.{crt,key} (the
    aggregation layer's client), and the API server's cert
    names that address too.
    """
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lbtrain-testbed-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    srv_key = _key()
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default.svc"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
    ]
    if node_ip:
        sans.append(x509.IPAddress(ipaddress.ip_address(node_ip)))
    srv = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    sa_key = _key()
    files = {
        "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
        "ca.key": _pem_key(ca_key),
        "apiserver.crt": srv.public_bytes(serialization.Encoding.PEM),
        "apiserver.key": _pem_key(srv_key),
        "sa.key": _pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    if node_ip:
        ip = x509.IPAddress(ipaddress.ip_address(node_ip))
        kubelet, kubelet_key = _leaf(ca, ca_key, "lbtrain-node", [ip])
        client, client_key = _leaf(
            ca, ca_key, "kube-apiserver-kubelet-client", [], organization="system:masters"
        )
        # The aggregation layer's client cert: the API server proxies to aggregated APIs (Kueue's
        # visibility API) with it, and they trust the X-Remote-* headers only from this name.
        proxy, proxy_key = _leaf(ca, ca_key, "front-proxy-client", [])
        files |= {
            "kubelet.crt": kubelet.public_bytes(serialization.Encoding.PEM),
            "kubelet.key": _pem_key(kubelet_key),
            "apiserver-kubelet-client.crt": client.public_bytes(serialization.Encoding.PEM),
            "apiserver-kubelet-client.key": _pem_key(client_key),
            "front-proxy-client.crt": proxy.public_bytes(serialization.Encoding.PEM),
            "front-proxy-client.key": _pem_key(proxy_key),
        }
    for name, data in files.items():
        path = folder / name
        path.write_bytes(data)
        if name.endswith(".key"):
            path.chmod(0o600)
