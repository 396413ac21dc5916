"""The emulator's own surface (issue 7 section 8): what held, over real HTTP."""

from __future__ import annotations

import requests

from tests.conftest import API_KEY


def test_held_control_endpoints_need_the_key(emulator):
    for method, path in [
        ("GET", "/_emulator/faults"),
        ("DELETE", "/_emulator/faults"),
        ("GET", "/_emulator/uploads"),
        ("POST", "/_emulator/link"),
        ("PUT", "/_emulator/blobs/adv.bin"),
    ]:
        answer = requests.request(method, f"{emulator.url}{path}", data=b"{}", timeout=10)
        assert answer.status_code == 401, (method, path, answer.status_code)
    assert requests.get(f"{emulator.url}/_emulator/health", timeout=10).status_code == 200


def test_held_bad_bodies_and_names_are_400s(emulator):
    headers = {"api-key": API_KEY}
    nested = "[" * 100_000 + "]" * 100_000
    answer = requests.post(f"{emulator.url}/_emulator/faults", data=nested, headers=headers, timeout=30)
    assert answer.status_code == 400
    answer = requests.put(f"{emulator.url}/_emulator/blobs/a%00b", data=b"x", headers=headers, timeout=10)
    assert answer.status_code == 400
    answer = requests.put(
        f"{emulator.url}/_emulator/blobs/big.bin", data=b"x" * (9 * 1024 * 1024), headers=headers, timeout=60
    )
    assert answer.status_code == 413
