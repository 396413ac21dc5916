"""What every resource service shares: its client, the surface's offer, and the objects it hands out."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

from airflow_provider_aoai.exceptions import AzureOpenAIUnsupportedOperationError
from airflow_provider_aoai.models import File, Surface, Upload, purposes_for
from airflow_provider_aoai.redaction import redact
from airflow_provider_aoai.validation import check_choice, check_expires_after

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

    def require(self, operation: str, supported: bool, where: str | None = None) -> None:
        """:raises AzureOpenAIUnsupportedOperationError: the surface does not offer ``operation``; ``where``
        says where it is offered (an Azure OpenAI resource endpoint, by default)."""
        if not supported:
            connection = f" of connection {self.conn_id!r}" if self.conn_id else ""
            raise AzureOpenAIUnsupportedOperationError(
                f"{operation} is not offered by the {self.surface.value} surface{connection}; "
                f"{where or 'use an Azure OpenAI resource endpoint for it'}."
            )

    def check_expiry(self, expires_after: Any, purpose: str) -> int | None:
        """``expires_after`` checked for ``purpose`` and for what this endpoint offers.

        :raises AzureOpenAIInvalidArgumentError: out of the purpose's range.
        :raises AzureOpenAIUnsupportedOperationError: the endpoint's api-version takes no expiry.
        """
        seconds = check_expires_after(expires_after, purpose)
        if seconds is not None:
            if self.surface is Surface.FOUNDRY:
                where = (
                    "a project's agent files take none: use its OpenAI route (extra foundry_route: openai)"
                )
            else:
                where = (
                    f"api-version {self.client.api_version} takes none: use the v1 API (api_version v1) "
                    "or a data plane api-version from 2025-03-01-preview"
                )
            self.require("expires_after", self.client.endpoint.offers_expiry, where)
        return seconds

    def check_purpose(self, purpose: Any, operation: str) -> str:
        """:raises AzureOpenAIInvalidArgumentError: ``operation`` does not take ``purpose`` here."""
        return check_choice(purpose, "purpose", purposes_for(self.surface, operation))
