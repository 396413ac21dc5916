"""Datasets: what the service will accept in a JSON Lines file of a given purpose.

:func:`check_jsonl_start` is the cheap check every upload of a JSON Lines purpose runs before its first
request: the first line must be a JSON object.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from airflow_provider_aoai.exceptions import AzureOpenAIInvalidArgumentError
from airflow_provider_aoai.models import JSONL_PURPOSES, MiB

if TYPE_CHECKING:
    from airflow_provider_aoai.sources import Source

SNIFF_BYTES = 1 * MiB


def check_jsonl_start(source: Source, purpose: str, argument: str = "source") -> None:
    """For JSON Lines purposes, check that the first line is a JSON object (the service validates the rest).

    :raises AzureOpenAIInvalidArgumentError: the file does not look like JSON Lines.
    """
    if purpose not in JSONL_PURPOSES:
        return
    with source.open() as stream:
        head = stream.read(SNIFF_BYTES)
    first = head.split(b"\n", 1)[0]
    try:
        record = json.loads(first)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise AzureOpenAIInvalidArgumentError(
            argument,
            f"{source.description} is not JSON Lines: purpose {purpose!r} needs one JSON object per line, "
            "and the first line is not one",
        )
