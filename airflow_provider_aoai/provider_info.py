"""The provider's metadata for Airflow, including the ``aoai`` connection form (no imports beyond stdlib)."""

from __future__ import annotations

INTEGRATION = "Azure OpenAI Files"


def _text(label: str, description: str, default: str | None = None, **schema: object) -> dict:
    field_schema: dict = {"type": ["string", "null"], **schema}
    if default is not None:
        field_schema["default"] = default
    return {"label": label, "description": description, "schema": field_schema}


# Extra names avoid the words Airflow treats as secrets ("token", "secret", "password", ...): Airflow 3 masks
# such extras, so users could not read back what they set. The client secret is the connection's password.
CONN_FIELDS = {
    "api_version": _text(
        "API version",
        "Data plane api-version (2024-10-21). 'v1' uses {endpoint}/openai/v1. Foundry projects use v1.",
        "2024-10-21",
    ),
    "foundry_route": _text(
        "Foundry route",
        "Foundry project endpoints: 'agents' ({project}/files?api-version=v1) or 'openai' (the OpenAI files "
        "API, {project}/openai/files?api-version=2025-11-15-preview, as azure-ai-projects 2.x uses).",
        "agents",
        enum=["agents", "openai"],
    ),
    "auth_type": _text(
        "Auth type",
        "api_key (the password is the key), client_secret (the password is the secret), managed_identity, "
        "workload_identity or default (DefaultAzureCredential).",
        "api_key",
        enum=["api_key", "client_secret", "managed_identity", "workload_identity", "default"],
    ),
    "tenant_id": _text("Tenant ID", "Entra ID tenant (client_secret, workload_identity)."),
    "client_id": _text(
        "Client ID", "App or user-assigned managed identity client id (client_secret, managed_identity, ...)."
    ),
    "scope": _text(
        "Entra ID scope",
        "Derived from the endpoint when empty "
        "(https://cognitiveservices.azure.com/.default or https://ai.azure.com/.default).",
    ),
    "federated_credential_file": _text(
        "Federated token file",
        "Workload identity: the service account token file; defaults to $AZURE_FEDERATED_TOKEN_FILE.",
    ),
    "authority_host": _text(
        "Authority host", "Entra ID authority for sovereign clouds; public cloud when empty."
    ),
    "timeout": {
        "label": "Timeout (s)",
        "description": "Seconds to wait for each answer of the service.",
        "schema": {"type": ["number", "null"], "default": 120},
    },
    "max_retries": {
        "label": "Max retries",
        "description": "Retries of throttled (429), 5xx and connection failures.",
        "schema": {"type": ["integer", "null"], "default": 5},
    },
    "retry_backoff": {
        "label": "Retry backoff (s)",
        "description": "First wait between retries; doubles each retry, with jitter, up to 60 s.",
        "schema": {"type": ["number", "null"], "default": 0.5},
    },
    "max_retry_wait": {
        "label": "Max retry wait (s)",
        "description": "Most seconds one request waits between its retries, in all (0-3600).",
        "schema": {"type": ["number", "null"], "default": 300},
    },
}

UI_FIELD_BEHAVIOUR = {
    # The port stays visible: Airflow 3.3's Test button refuses a connection without one (airflow#73298).
    "hidden-fields": ["schema", "login"],
    "relabeling": {"host": "Endpoint", "password": "API key or client secret"},
    "placeholders": {
        "port": "optional: the endpoint's port, e.g. 443",
        "host": "https://<name>.openai.azure.com or https://<name>.services.ai.azure.com/api/projects/<project>",
        "password": "the api key (auth_type api_key) or the client secret (auth_type client_secret)",
    },
}

PROVIDER_INFO = {
    "package-name": "airflow-provider-aoai",
    "name": "Azure OpenAI Files",
    "description": "Move data into the Azure OpenAI and Azure AI Foundry Files services: "
    "import from URL, multipart and plain uploads, file status sensing, delete and prune, OpenLineage.",
    "integrations": [
        {
            "integration-name": INTEGRATION,
            "external-doc-url": "https://learn.microsoft.com/azure/ai-services/openai/reference",
            "tags": ["azure"],
        }
    ],
    "hooks": [{"integration-name": INTEGRATION, "python-modules": ["airflow_provider_aoai.hooks"]}],
    "operators": [
        {
            "integration-name": INTEGRATION,
            "python-modules": [
                "airflow_provider_aoai.operators",
                "airflow_provider_aoai.delete_operators",
                "airflow_provider_aoai.dataset_operators",
            ],
        }
    ],
    "sensors": [{"integration-name": INTEGRATION, "python-modules": ["airflow_provider_aoai.sensors"]}],
    "triggers": [{"integration-name": INTEGRATION, "python-modules": ["airflow_provider_aoai.triggers"]}],
    "connection-types": [
        {
            "connection-type": "aoai",
            "hook-class-name": "airflow_provider_aoai.hooks.AzureOpenAIHook",
            "hook-name": "Azure OpenAI Files",
            "conn-fields": CONN_FIELDS,
            "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
        }
    ],
}
