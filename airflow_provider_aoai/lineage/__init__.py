"""Lineage of the operators: OpenLineage datasets and facets, and the extra of Airflow asset events.

* :mod:`.naming`: how a source and a file are named as datasets (the OpenLineage naming spec);
* :mod:`.schema`: the file facet's key and JSON Schema; :mod:`.facets`: the facet class (imports the
  OpenLineage client, loaded only when lineage is extracted);
* :mod:`.mixin`: the operators' OpenLineage methods and asset-event extras.

Importing this package imports nothing beyond the standard library and this provider's light modules.
"""

from __future__ import annotations

from airflow_provider_aoai.lineage.mixin import (
    AzureOpenAILineageMixin,
    asset_event_extra,
    deleted_files_lineage,
    file_of,
    lineage_namespace,
    set_asset_event_extras,
    split_lineage,
)
from airflow_provider_aoai.lineage.naming import (
    file_dataset_name,
    resource_namespace,
    source_dataset,
    url_dataset,
)
from airflow_provider_aoai.lineage.schema import (
    FILE_FACET_KEY,
    FILE_FACET_SCHEMA,
    FILE_FACET_SCHEMA_URL,
    FILE_NAMESPACE_SCHEME,
)

__all__ = [
    "FILE_FACET_KEY",
    "FILE_FACET_SCHEMA",
    "FILE_FACET_SCHEMA_URL",
    "FILE_NAMESPACE_SCHEME",
    "AzureOpenAILineageMixin",
    "asset_event_extra",
    "deleted_files_lineage",
    "file_dataset_name",
    "file_of",
    "lineage_namespace",
    "resource_namespace",
    "set_asset_event_extras",
    "source_dataset",
    "split_lineage",
    "url_dataset",
]
