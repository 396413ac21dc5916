"""What every resource service shares: its client, the surface's offer, and the objects it hands out."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

from airflow_provider_aoai.exceptions import AzureOpenAIUnsupportedOperationError
from airflow_provider_aoai.models import File, Surface, Upload, purposes_for
from airflow_provider_aoai.redaction import redact
from airflow_provider_aoai.validation import check_choice

if TYPE_CHECKING:
    from airflow_provider_aoai.http.client import AzureOpenAIClient


def as_file(payload: dict[str, Any]) -> File:
    """A File as the service answered it, with ``status_details`` redacted: services echo URLs and keys."""
    file = cast(File, dict(payload))
    if isinstance(file.get("status_details"), str):
        file["status_details"] = redact(file["status_details"])
    return file


def as_upload(payload: dict[str, Any]) -> Upload:
    """An Upload as the service answered it, its nested File (once completed) as :func:`as_file` makes it."""
    upload = cast(Upload, dict(payload))
    nested = upload.get("file")
    if isinstance(nested, dict):
        upload["file"] = as_file(cast(dict[str, Any], nested))
    return upload


class Resource:
    """A service of one connection's client (files, uploads, ...).

    :param conn_id: the Airflow connection the client was built from, for messages.
    """

    def __init__(self, client: AzureOpenAIClient, *, conn_id: str | None = None, log: Any = None) -> None:
        self.client = client
        self.conn_id = conn_id
        self.log = log if log is not None else logging.getLogger(type(self).__module__)

    @property
    def surface(self) -> Surface:
        return self.client.surface

    def require(self, operation: str, supported: bool) -> None:
        """:raises AzureOpenAIUnsupportedOperationError: the surface does not offer ``operation``."""
        if not supported:
            connection = f" of connection {self.conn_id!r}" if self.conn_id else ""
            raise AzureOpenAIUnsupportedOperationError(
                f"{operation} is not offered by the {self.surface.value} surface{connection}; use an Azure "
                "OpenAI resource endpoint for it."
            )

    def check_purpose(self, purpose: Any, operation: str) -> str:
        """:raises AzureOpenAIInvalidArgumentError: ``operation`` does not take ``purpose`` here."""
        return check_choice(purpose, "purpose", purposes_for(self.surface, operation))
