"""The service's per-resource file quotas, as the emulator keeps them (defaults as documented).

* fine-tune: at most 100 files and 1 GB in all per resource ("Maximum files per resource (fine-tuning) |
  100", "Total size of all files per resource (fine-tuning) | 1 GB": Azure OpenAI quotas and limits,
  learn.microsoft.com/azure/ai-foundry/openai/quotas-limits, 2026-02);
* batch input files: at most 500 without an expiration and 10,000 with one ("Maximum Batch input files -
  (no expiration) | 500", "(expiration set) | 10,000": global-batch-limits, learn.microsoft.com).

Over a quota, a create answers 400 ``quotaExceeded``; the batch message is the service's own ("The quota for
files without expiry is reached. The maximum is 500.", as a user reported it in Azure/azure-sdk-for-java
#47401); the fine-tune ones are ours (no recording or page shows the service's).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_aoai.emulator.errors import StoreError
from airflow_provider_aoai.models import GiB


@dataclass
class Quotas:
    """Per-resource quotas; tests shrink them so that they are cheap to reach."""

    fine_tune_files: int = 100
    fine_tune_bytes: int = 1 * GiB
    batch_files: int = 500  # input files without an expiration
    batch_files_expiring: int = 10_000  # input files with one

    def check(self, files: Iterable[Mapping[str, Any]], *, purpose: str, size: int, expiring: bool) -> None:
        """Whether one more file of ``purpose`` (``size`` bytes, with or without an expiration) fits among
        ``files`` (the resource's live files).

        :raises StoreError: 400 ``quotaExceeded``.
        """
        if purpose == "fine-tune":
            mine = [f for f in files if f.get("purpose") == "fine-tune"]
            if len(mine) >= self.fine_tune_files:
                raise _exceeded(
                    f"The quota for fine-tune files is reached. The maximum is {self.fine_tune_files}."
                )
            used = sum(f.get("bytes") or 0 for f in mine)
            if used + size > self.fine_tune_bytes:
                raise _exceeded(
                    f"The total size of fine-tune files would exceed the quota of {self.fine_tune_bytes} "
                    f"bytes ({used} bytes are used)."
                )
        elif purpose == "batch":
            same = [
                f
                for f in files
                if f.get("purpose") == "batch" and (f.get("expires_at") is not None) == expiring
            ]
            limit = self.batch_files_expiring if expiring else self.batch_files
            if len(same) >= limit:
                kind = "with" if expiring else "without"
                raise _exceeded(f"The quota for files {kind} expiry is reached. The maximum is {limit}.")


def _exceeded(message: str) -> StoreError:
    return StoreError(400, "quotaExceeded", message)
