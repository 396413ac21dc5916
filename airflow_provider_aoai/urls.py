"""URL helpers shared by the client, the hook and the emulator (standard library only).

Redacting URLs lives in :mod:`airflow_provider_aoai.redaction`, with every other redaction."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses, where plain http is allowed (the emulator)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
