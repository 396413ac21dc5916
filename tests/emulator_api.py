"""Raw HTTP to an emulator, for tests that check the emulator itself or need a request the hook would refuse;
and the emulator's command line started as a process of its own."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pytest
import requests

from tests.conftest import API_KEY

if TYPE_CHECKING:
    from airflow_provider_aoai.emulator import Emulator

V = {"api-version": "2024-10-21"}
KEY = {"api-key": API_KEY}
LISTENING = "AOAI emulator listening on "


def ai_token(emu: Emulator) -> dict[str, str]:
    """An Entra ID bearer token for https://ai.azure.com, from the emulator's managed-identity endpoint."""
    answer = requests.get(
        emu.identity_endpoint,
        params={"api-version": "2019-08-01", "resource": "https://ai.azure.com"},
        headers={"X-IDENTITY-HEADER": emu.identity.header_secret},
        timeout=10,
    )
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


# ------------------------------------------------------------------------------ uploads
def start_upload(
    emu: Emulator,
    size: int,
    *,
    prefix: str = "/openai",
    purpose: str = "fine-tune",
    filename: str = "u.jsonl",
    mime_type: str = "text/jsonl",
    headers: Mapping[str, str] = KEY,
) -> requests.Response:
    """The answer to creating an upload of ``size`` bytes (under ``prefix`` /openai/v1: no api-version)."""
    return requests.post(
        f"{emu.url}{prefix}/uploads",
        params=V if prefix == "/openai" else {},
        headers=headers,
        json={"purpose": purpose, "filename": filename, "bytes": size, "mime_type": mime_type},
        timeout=10,
    )


def new_upload(emu: Emulator, size: int, **kwargs: Any) -> str:
    """The id of a new upload (as ``start_upload``, which must answer 200)."""
    answer = start_upload(emu, size, **kwargs)
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


def add_part(emu: Emulator, upload_id: str, data: bytes) -> requests.Response:
    return requests.post(
        f"{emu.url}/openai/uploads/{upload_id}/parts",
        params=V,
        headers=KEY,
        files={"data": ("blob", data)},
        timeout=10,
    )


def complete(emu: Emulator, upload_id: str, part_ids: list[str]) -> requests.Response:
    return requests.post(
        f"{emu.url}/openai/uploads/{upload_id}/complete",
        params=V,
        headers=KEY,
        json={"part_ids": part_ids},
        timeout=10,
    )


# ------------------------------------------------------------------------------ the command line
@contextmanager
def emulator_process(
    *flags: str,
    data_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    stderr: int | IO[str] = subprocess.DEVNULL,
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m airflow_provider_aoai.emulator --port 0 --api-key API_KEY [--data-dir data_dir] *flags``:
    yields the process and the URL it prints, and stops the process on exit (one that has already exited,
    say on a signal the test sent, is left as it is)."""
    command = [sys.executable, "-m", "airflow_provider_aoai.emulator", "--port", "0", "--api-key", API_KEY]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    process = subprocess.Popen(
        [*command, *flags],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=None if env is None else dict(env),
    )
    try:
        line = process.stdout.readline().strip()
        if not line.startswith(LISTENING):
            pytest.fail(
                f"the emulator's first line should be '{LISTENING}URL', it is {line!r} "
                f"(exit code {process.poll()}; command {[*command, *flags]})"
            )
        yield process, line.removeprefix(LISTENING)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
