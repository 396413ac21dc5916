"""Connection settings -> how requests authenticate (an api key, or Entra ID tokens from azure-identity).

The auth mode is chosen in one place, :func:`build_auth`. azure-identity is imported only when a token
credential is built, never at DAG parse time. Secrets are registered with Airflow's secrets masker as soon
as they are read, and every new token as soon as it is obtained.
"""

from __future__ import annotations

import re
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from airflow_provider_aoai.exceptions import AzureOpenAIConfigError, AzureOpenAICredentialError
from airflow_provider_aoai.redaction import register_secret

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

AUTH_TYPES = ("api_key", "client_secret", "managed_identity", "workload_identity", "default")
# Refresh a token this long before it expires, so a request never leaves with one about to lapse.
TOKEN_REFRESH_MARGIN_SECONDS = 300


def mask(secret: str | None, *, with_prefix: bool = False) -> None:
    """Register ``secret`` with our redaction rule and Airflow's secrets masker (no-op for empty values).

    :param with_prefix: also register its first half (at least 8 characters): services echo a key's
        beginning ("Incorrect API key provided: 0123abcd****").
    """
    if not secret:
        return
    register_secret(secret)
    if with_prefix and len(secret) >= 16:
        register_secret(secret[: max(8, len(secret) // 2)])
    from airflow.providers.common.compat.sdk import mask_secret

    mask_secret(secret)


# Query parameters whose values are credentials in the URLs users import from (SAS, presigned URLs).
SECRET_QUERY_KEYS = frozenset(
    {"sig", "signature", "x-amz-signature", "x-goog-signature", "token", "code", "key"}
)


def mask_url_secrets(url: str) -> None:
    """Register a URL's query string, its values and its userinfo as secrets (masker and redaction)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    if parts.password:
        mask(parts.password)
    if not parts.query:
        return
    mask(parts.query)
    for key, value in parse_qsl(parts.query, keep_blank_values=False):
        if key.lower() in SECRET_QUERY_KEYS:
            mask(value)


_PRINTABLE_ASCII = re.compile(r"[!-~]+")


class ApiKeyAuth:
    """Sends the ``api-key`` header.

    :raises AzureOpenAIConfigError: the key has a space, a line break or a character outside printable ASCII
        (a key has none; a header could not carry them faithfully). The message never shows the key.
    """

    def __init__(self, api_key: str) -> None:
        mask(api_key, with_prefix=True)
        if not isinstance(api_key, str) or not _PRINTABLE_ASCII.fullmatch(api_key):
            raise AzureOpenAIConfigError(
                "the api key has a space, a line break or a character outside printable ASCII, which an "
                "api key never has: copy it again from the resource's Keys and Endpoint page"
            )
        self._api_key = api_key

    def headers(self) -> dict[str, str]:
        return {"api-key": self._api_key}

    def __repr__(self) -> str:
        return "ApiKeyAuth(api_key=***)"


class TokenAuth:
    """Sends ``Authorization: Bearer <token>`` from an azure-identity credential.

    Tokens are cached and shared by all threads (parallel part uploads), refreshed
    :data:`TOKEN_REFRESH_MARGIN_SECONDS` before expiry.
    """

    def __init__(self, credential: TokenCredential, scope: str) -> None:
        self.credential = credential
        self.scope = scope
        self._token: str | None = None
        self._expires_on = 0.0
        self._lock = threading.Lock()

    def _current(self) -> str:
        with self._lock:
            if self._token is None or self._expires_on - time.time() < TOKEN_REFRESH_MARGIN_SECONDS:
                from azure.core.exceptions import ClientAuthenticationError

                try:
                    access_token = self.credential.get_token(self.scope)
                    token, expires_on = str(access_token.token), float(access_token.expires_on)
                except ClientAuthenticationError as exc:
                    raise AzureOpenAICredentialError(
                        f"{type(self.credential).__name__} could not get a token for {self.scope}: "
                        f"{exc.message}"
                    ) from None
                except Exception as exc:
                    raise AzureOpenAICredentialError(
                        f"{type(self.credential).__name__} could not get a token for {self.scope}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from None
                mask(token)
                self._token = token
                self._expires_on = expires_on
            return self._token

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._current()}"}

    def __repr__(self) -> str:
        return f"TokenAuth(credential={type(self.credential).__name__}, scope={self.scope!r})"


# Extras renamed because Airflow masks extras whose name contains "token"; the old names still work.
FORMER_FIELD_NAMES = {"scope": "token_scope", "federated_credential_file": "token_file_path"}


def connection_field(extras: dict[str, Any], name: str) -> Any:
    """An extra by its name, Airflow 2's prefixed form name (``extra__aoai__<name>``) or its former name."""
    for field in (name, FORMER_FIELD_NAMES.get(name)):
        for key in (field, f"extra__aoai__{field}") if field else ():
            if extras.get(key) not in (None, ""):
                return extras[key]
    return None


def build_auth(
    *,
    conn_id: str,
    extras: dict[str, Any],
    login: str | None,
    password: str | None,
    scope: str,
) -> ApiKeyAuth | TokenAuth:
    """Build the auth for a connection.

    :raises AzureOpenAIConfigError: unknown ``auth_type`` or a missing field, naming both the connection
        and the field.
    """
    auth_type = connection_field(extras, "auth_type")
    if auth_type is None:
        if not password:
            raise AzureOpenAIConfigError(
                f"Connection {conn_id!r}: set the api key as the connection's password, or choose an "
                f"auth_type extra ({', '.join(AUTH_TYPES)})."
            )
        auth_type = "api_key"
    if auth_type not in AUTH_TYPES:
        raise AzureOpenAIConfigError(
            f"Connection {conn_id!r}: unknown auth_type {auth_type!r}; "
            f"expected one of {', '.join(AUTH_TYPES)}."
        )

    def required(name: str, value: Any) -> Any:
        if not value:
            raise AzureOpenAIConfigError(
                f"Connection {conn_id!r}: auth_type {auth_type!r} needs the {name!r} field."
            )
        return value

    if auth_type == "api_key":
        key = required("password (api key)", password)
        try:
            return ApiKeyAuth(key)
        except AzureOpenAIConfigError as exc:
            raise AzureOpenAIConfigError(f"Connection {conn_id!r}: password: {exc}") from None

    from azure import identity

    client_id = connection_field(extras, "client_id") or login or None
    options: dict[str, Any] = {}
    if authority_host := connection_field(extras, "authority_host"):
        options["authority"] = authority_host
    if auth_type == "client_secret":
        # The password holds the secret (Airflow 2's form loses password-type extras on edit); a
        # client_secret extra, from JSON or older connections, still takes precedence.
        secret = connection_field(extras, "client_secret") or password
        mask(secret, with_prefix=True)
        from urllib.parse import urlsplit

        from airflow_provider_aoai.urls import is_loopback

        if authority_host and is_loopback(urlsplit(authority_host).hostname or ""):
            options["disable_instance_discovery"] = (
                True  # a local authority (the emulator) is not in Azure's list
            )
        credential: Any = identity.ClientSecretCredential(
            tenant_id=required("tenant_id", connection_field(extras, "tenant_id")),
            client_id=required("client_id", client_id),
            client_secret=required("password (client secret)", secret),
            **options,
        )
    elif auth_type == "managed_identity":
        credential = identity.ManagedIdentityCredential(client_id=client_id)
    elif auth_type == "workload_identity":
        # tenant_id, client_id and token file default to AZURE_TENANT_ID, AZURE_CLIENT_ID and
        # AZURE_FEDERATED_TOKEN_FILE, which the workload identity webhook injects into the pod.
        kwargs = {
            "tenant_id": connection_field(extras, "tenant_id"),
            "client_id": client_id,
            "token_file_path": connection_field(extras, "federated_credential_file"),
            **options,
        }
        try:
            credential = identity.WorkloadIdentityCredential(**{k: v for k, v in kwargs.items() if v})
        except ValueError as exc:
            raise AzureOpenAIConfigError(
                f"Connection {conn_id!r}: auth_type 'workload_identity' is incomplete: {exc}"
            ) from None
    else:
        credential = identity.DefaultAzureCredential(
            managed_identity_client_id=client_id, workload_identity_client_id=client_id, **options
        )
    return TokenAuth(credential, scope)
