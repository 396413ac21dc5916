"""The OpenLineage facet that describes a file in Azure OpenAI or Foundry (imports the OpenLineage client).

Loaded only when Airflow's OpenLineage listener asks an operator for its lineage (see
:mod:`airflow_provider_aoai.lineage.mixin`); importing the operators never imports this module. The facet's
JSON Schema is :data:`airflow_provider_aoai.lineage.schema.FILE_FACET_SCHEMA`.
"""

from __future__ import annotations

import attr
from openlineage.client.generated.base import DatasetFacet

from airflow_provider_aoai.lineage.schema import FILE_FACET_SCHEMA_URL


@attr.define
class AzureOpenAIFileDatasetFacet(DatasetFacet):
    """A file in the Files service of an Azure OpenAI resource or a Foundry project (``azureOpenAIFile``).

    Field names follow OpenLineage's camelCase, except those that mirror the service's File object.
    """

    fileId: str  # OpenLineage facet fields are camelCase
    filename: str | None = attr.field(default=None)
    bytes: int | None = attr.field(default=None)  # the service's name for the size
    purpose: str | None = attr.field(default=None)
    status: str | None = attr.field(default=None)
    md5: str | None = attr.field(default=None)  # hex digest, when the operator computed it (multipart)

    @staticmethod
    def _get_schema() -> str:
        return FILE_FACET_SCHEMA_URL
