"""Deprecated: :func:`airflow_provider_aoai.datasets.validate_dataset` checks every rule the service applies
and tells each problem with its code and line; :func:`validate_jsonl` is kept, for DAGs that call it, as a
thin wrapper that answers its first problem's message."""

from __future__ import annotations

import warnings
from pathlib import Path


def validate_jsonl(path: Path, purpose: str) -> str | None:
    """The first problem :func:`~airflow_provider_aoai.datasets.validate_dataset` finds, as text; ``None``
    when the file is valid for ``purpose`` (or the purpose is not validated).

    .. deprecated:: 0.2.0
        Use :func:`airflow_provider_aoai.datasets.validate_dataset`, which lists every problem.
    """
    from airflow_provider_aoai.datasets import validate_dataset

    warnings.warn(
        "validate_jsonl is deprecated: use airflow_provider_aoai.datasets.validate_dataset",
        DeprecationWarning,
        stacklevel=2,
    )
    problems = validate_dataset(path, purpose)
    return problems[0].message if problems else None
