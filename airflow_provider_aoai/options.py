"""Options an operator knows when its DAG is parsed, checked then, once, and handed to the services as is.

Light on purpose: operators import it at DAG parse, so it imports neither the hook nor the HTTP stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow_provider_aoai.exceptions import AzureOpenAIInvalidArgumentError
from airflow_provider_aoai.models import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_PART_BYTES,
    MAX_CONCURRENCY,
    MAX_PART_BYTES,
    MIN_PART_BYTES,
)
from airflow_provider_aoai.validation import MIN_POLL_SECONDS, check_int, check_seconds

DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_WAIT_TIMEOUT = 60 * 60.0


def check_part_range(part_size: Any, argument: str = "part_size") -> int:
    """:raises AzureOpenAIInvalidArgumentError: not an integer in [1 MiB, 512 MiB]."""
    if isinstance(part_size, bool) or not isinstance(part_size, int):
        raise AzureOpenAIInvalidArgumentError(argument, "must be an integer number of bytes")
    if not MIN_PART_BYTES <= part_size <= MAX_PART_BYTES:
        raise AzureOpenAIInvalidArgumentError(
            argument, f"{part_size} is outside the allowed range [{MIN_PART_BYTES}, {MAX_PART_BYTES}] bytes"
        )
    return part_size


@dataclass(frozen=True)
class WaitOptions:
    """How a wait for processing polls: every ``poll_interval`` seconds, for at most ``timeout`` seconds."""

    poll_interval: float = DEFAULT_POLL_INTERVAL
    timeout: float = DEFAULT_WAIT_TIMEOUT

    @classmethod
    def checked(cls, poll_interval: Any, timeout: Any, *, timeout_name: str = "timeout") -> WaitOptions:
        """:raises AzureOpenAIInvalidArgumentError: naming the argument."""
        return cls(
            check_seconds(poll_interval, "poll_interval", minimum=MIN_POLL_SECONDS, allow_zero=True),
            check_seconds(timeout, timeout_name),
        )


@dataclass(frozen=True)
class MultipartOptions:
    """How a multipart upload sends: bytes per part, parts in flight, seconds between progress lines."""

    part_size: int = DEFAULT_PART_BYTES
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    progress_interval: float = 5.0

    @classmethod
    def checked(cls, part_size: Any, max_concurrency: Any, progress_interval: Any) -> MultipartOptions:
        """:raises AzureOpenAIInvalidArgumentError: naming the argument."""
        return cls(
            check_part_range(part_size),
            check_int(max_concurrency, "max_concurrency", minimum=1, maximum=MAX_CONCURRENCY),
            check_seconds(progress_interval, "progress_interval", minimum=0, allow_zero=True),
        )
