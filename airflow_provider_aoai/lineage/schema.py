"""The OpenLineage facet this provider adds to a file's dataset: its key, ``_schemaURL`` and JSON Schema.

Constants only (no OpenLineage import): the operators name the facet at DAG parse, the facet class
(:mod:`.facets`) is loaded only when lineage is extracted.
"""

from __future__ import annotations

from typing import Any

#: Scheme of the namespace of files in an Azure OpenAI resource or a Foundry project.
FILE_NAMESPACE_SCHEME = "azure-openai"
#: Key of the file facet in a dataset's ``facets``.
FILE_FACET_KEY = "azureOpenAIFile"
#: ``_schemaURL`` of the file facet: a URN until the schema is published at a URL of its own.
FILE_FACET_SCHEMA_URL = "urn:airflow-provider-aoai:openlineage:AzureOpenAIFileDatasetFacet:1-0-0"
#: JSON Schema of the file facet, as serialized by the OpenLineage client (``None`` fields are left out).
FILE_FACET_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": FILE_FACET_SCHEMA_URL,
    "title": "AzureOpenAIFileDatasetFacet",
    "description": "A file in the Files service of an Azure OpenAI resource or an Azure AI Foundry project.",
    "type": "object",
    "required": ["_producer", "_schemaURL", "fileId"],
    "additionalProperties": False,
    "properties": {
        "_producer": {"type": "string", "format": "uri"},
        "_schemaURL": {"type": "string", "format": "uri"},
        "_deleted": {"type": "boolean"},
        "fileId": {"type": "string", "minLength": 1, "description": "The service's file id."},
        "filename": {"type": "string", "description": "The file's name in the service."},
        "bytes": {"type": "integer", "minimum": 0, "description": "The file's size."},
        "purpose": {"type": "string", "description": "e.g. fine-tune, batch, assistants."},
        "status": {"type": "string", "description": "The file's status when the task ended."},
        "md5": {
            "type": "string",
            "pattern": "^[0-9a-f]{32}$",
            "description": "Hex md5 of the content, computed while uploading (multipart uploads).",
        },
    },
}
