"""Airflow configuration the operators, the sensor and the trigger read (read when a task is built)."""

from __future__ import annotations

from airflow.providers.common.compat.sdk import conf


def default_deferrable() -> bool:
    """``[operators] default_deferrable``, read when a task is built (not when this module is imported)."""
    return conf.getboolean("operators", "default_deferrable", fallback=False)
