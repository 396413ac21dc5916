"""URL helpers shared by the client, the hook and the emulator (standard library only).

Redacting URLs lives in :mod:`airflow_provider_aoai.redaction`, with every other redaction."""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses, where plain http is allowed (the emulator)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def authority(parts: SplitResult) -> str:
    """``host[:port]`` of a split URL, an IPv6 host in brackets; never its userinfo.

    :raises ValueError: the port is not a valid number.
    """
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    return host + (f":{port}" if port is not None else "")


def is_valid_host(host: str) -> bool:
    """True for an IP address or a DNS name whose labels are 1-63 characters (IDNA included)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        pass
    name = host.removesuffix(".")
    if not name or any(ch.isspace() for ch in name):
        return False
    try:
        encoded = name.encode("idna")
    except UnicodeError:
        return False
    return len(encoded) <= 253 and all(0 < len(label) <= 63 for label in encoded.split(b"."))
