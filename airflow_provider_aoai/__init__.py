"""Apache Airflow provider for the Azure OpenAI and Azure AI Foundry Files services."""

from __future__ import annotations

__version__ = "0.1.0"


def get_provider_info() -> dict:
    """Provider metadata for Airflow's providers manager (entry point ``apache_airflow_provider``)."""
    from airflow_provider_aoai.provider_info import PROVIDER_INFO

    return {**PROVIDER_INFO, "versions": [__version__]}
