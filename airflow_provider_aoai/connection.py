"""An Airflow ``aoai`` connection -> checked settings -> the HTTP client (no request is sent here).

Every field is checked here, once, before anything is built, and every problem is an
:class:`AzureOpenAIConfigError` that names the connection and the field, never a raw ``ValueError`` from
deep inside a library; the client takes the settings as given. Messages show endpoints redacted (no
userinfo, no query values).
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_aoai.credentials import AUTH_TYPES, build_auth, connection_field
from airflow_provider_aoai.exceptions import AzureOpenAIConfigError
from airflow_provider_aoai.http.client import AzureOpenAIClient
from airflow_provider_aoai.http.endpoint import FOUNDRY_ROUTES, Endpoint
from airflow_provider_aoai.http.policy import MAX_RETRY_WAIT_SECONDS
from airflow_provider_aoai.models import has_space_or_control
from airflow_provider_aoai.redaction import redact_url
from airflow_provider_aoai.urls import is_loopback

DEFAULT_TIMEOUT = 120.0
DEFAULT_MAX_RETRIES = 5
DEFAULT_RETRY_BACKOFF = 0.5
MAX_TIMEOUT = 3600.0
MAX_RETRIES = 20
MAX_RETRY_BACKOFF = 60.0
MAX_RETRY_WAIT = 3600.0
_API_VERSION = re.compile(r"^(v1|preview|\d{4}-\d{2}-\d{2}(-preview)?)$")
_TENANT_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-.")


@dataclass(frozen=True)
class ConnectionSettings:
    """The checked settings of one ``aoai`` connection."""

    conn_id: str
    endpoint: Endpoint
    timeout: float
    max_retries: int
    retry_backoff: float
    max_retry_wait: float
    scope: str


def endpoint_of(conn: Any) -> str:
    """The endpoint URL of a connection: its host, given a scheme (and port) when written without one.

    URI-style connections (``aoai://:key@myres.openai.azure.com``) carry a bare host: https is assumed,
    except for loopback hosts, where the emulator listens on plain http. Airflow parses the path of a URI
    (``aoai://:key@myres.openai.azure.com/openai/v1``) into the schema: it is the endpoint's path.
    """
    host = (conn.host or "").strip()
    path_in_schema = (conn.schema or "").strip().strip("/")
    if path_in_schema and host and urlsplit(host if "://" in host else f"//{host}").path.strip("/") == "":
        host = f"{host.rstrip('/')}/{path_in_schema}"
    if not host or "://" in host:
        return host
    name, _, path = host.partition("/")
    if conn.port and ":" not in name:
        name = f"{name}:{conn.port}"
    scheme = "http" if is_loopback(name.rsplit(":", 1)[0].strip("[]")) else "https"
    return f"{scheme}://{name}" + (f"/{path}" if path else "")


class _Fields:
    """Reads and checks a connection's extras, naming the connection in every error."""

    def __init__(self, conn_id: str, extras: dict[str, Any]) -> None:
        self.conn_id = conn_id
        self.extras = extras

    def error(self, field: str, problem: str) -> AzureOpenAIConfigError:
        return AzureOpenAIConfigError(f"Connection {self.conn_id!r}: field {field!r} {problem}")

    def raw(self, name: str) -> Any:
        return connection_field(self.extras, name)

    def number(self, name: str, default: float, *, minimum: float, maximum: float, allow_min: bool) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            if isinstance(value, bool):
                raise TypeError
            number = float(value)
        except (TypeError, ValueError):
            raise self.error(name, f"must be a number, got {str(value)[:40]!r}") from None
        if not math.isfinite(number):
            raise self.error(name, f"must be a finite number, got {str(value)[:40]!r}")
        low_ok = number >= minimum if allow_min else number > minimum
        if not low_ok or number > maximum:
            bound = "at least" if allow_min else "more than"
            raise self.error(name, f"must be {bound} {minimum:g} and at most {maximum:g}, got {number:g}")
        return number

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool):
            raise self.error(name, "must be an integer")
        try:
            number = int(value) if not isinstance(value, float) or value.is_integer() else None
        except (TypeError, ValueError):
            number = None
        if number is None:
            raise self.error(name, f"must be an integer, got {str(value)[:40]!r}")
        if not minimum <= number <= maximum:
            raise self.error(name, f"must be from {minimum} to {maximum}, got {number}")
        return number

    def text(self, name: str) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(name, "must be a non-empty string")
        if has_space_or_control(value.strip()) or value != value.strip():
            raise self.error(name, "must not contain whitespace or control characters")
        return value


def check_auth_fields(fields: _Fields) -> None:
    """What azure-identity would refuse with a raw ValueError, refused here with the field's name."""
    auth_type = fields.raw("auth_type")
    if auth_type is not None and auth_type not in AUTH_TYPES:
        raise fields.error(
            "auth_type", f"is {str(auth_type)[:40]!r}; expected one of {', '.join(AUTH_TYPES)}"
        )
    tenant_id = fields.text("tenant_id")
    if tenant_id is not None and any(ch not in _TENANT_CHARACTERS for ch in tenant_id):
        raise fields.error(
            "tenant_id", "may hold only letters, digits, '-' and '.' (a GUID or a domain name)"
        )
    fields.text("client_id")
    fields.text("federated_credential_file")
    authority = fields.text("authority_host")
    if authority is not None:
        try:
            parts = urlsplit(authority if "://" in authority else f"https://{authority}")
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise fields.error("authority_host", "is not a valid URL") from None
        if parts.scheme != "https" or not parts.hostname:
            raise fields.error(
                "authority_host",
                f"must be an https URL (azure-identity refuses anything else), got {redact_url(authority)!r}",
            )
        if parts.username or parts.password or parts.query:
            raise fields.error("authority_host", "must not carry credentials or a query")


def read_settings(conn: Any, conn_id: str) -> ConnectionSettings:
    """Check every field of ``conn`` (no request is sent).

    :raises AzureOpenAIConfigError: naming the connection and the field.
    """
    extras = conn.extra_dejson or {}
    if not isinstance(extras, dict):
        raise AzureOpenAIConfigError(f"Connection {conn_id!r}: the extra must be a JSON object")
    fields = _Fields(conn_id, extras)
    host = endpoint_of(conn)
    if not host:
        raise fields.error("host", "(the endpoint) is empty")
    api_version = fields.text("api_version")
    if api_version is not None and not _API_VERSION.match(api_version):
        raise fields.error(
            "api_version", f"{api_version[:40]!r} is not an api-version (e.g. 2024-10-21 or v1)"
        )
    route = fields.text("foundry_route")
    if route is not None and route not in FOUNDRY_ROUTES:
        raise fields.error("foundry_route", f"is {route[:40]!r}; expected one of {', '.join(FOUNDRY_ROUTES)}")
    try:
        endpoint = Endpoint.of(host, api_version, route)
    except AzureOpenAIConfigError as exc:
        raise AzureOpenAIConfigError(f"Connection {conn_id!r}: field 'host': {exc}") from None
    surface = endpoint.surface
    check_auth_fields(fields)
    if conn.login is not None and conn.login != "" and fields.raw("client_id") is None:
        login = conn.login
        if not isinstance(login, str) or has_space_or_control(login.strip()):
            raise fields.error(
                "login", "(used as the client_id) must not contain whitespace or control characters"
            )
    if surface.is_foundry and fields.raw("auth_type") in (None, "api_key"):
        raise AzureOpenAIConfigError(
            f"Connection {conn_id!r}: Foundry project endpoints accept only Microsoft Entra ID tokens; set "
            "the "
            "auth_type extra to client_secret, managed_identity, workload_identity or default."
        )
    scope = fields.text("scope") or surface.default_scope
    return ConnectionSettings(
        conn_id=conn_id,
        endpoint=endpoint,
        timeout=fields.number("timeout", DEFAULT_TIMEOUT, minimum=0, maximum=MAX_TIMEOUT, allow_min=False),
        max_retries=fields.integer("max_retries", DEFAULT_MAX_RETRIES, minimum=0, maximum=MAX_RETRIES),
        retry_backoff=fields.number(
            "retry_backoff", DEFAULT_RETRY_BACKOFF, minimum=0, maximum=MAX_RETRY_BACKOFF, allow_min=True
        ),
        max_retry_wait=fields.number(
            "max_retry_wait", MAX_RETRY_WAIT_SECONDS, minimum=0, maximum=MAX_RETRY_WAIT, allow_min=True
        ),
        scope=scope,
    )


def build_client(conn: Any, conn_id: str) -> AzureOpenAIClient:
    """The HTTP client for a connection: settings checked, credentials built (no token is fetched yet).

    :raises AzureOpenAIConfigError: naming the connection and the field.
    """
    settings = read_settings(conn, conn_id)
    extras = conn.extra_dejson or {}
    try:
        auth = build_auth(
            conn_id=conn_id, extras=extras, login=conn.login, password=conn.password, scope=settings.scope
        )
    except ValueError as exc:  # azure-identity's own checks, should one of ours have missed a case
        raise AzureOpenAIConfigError(
            f"Connection {conn_id!r}: the credential settings are invalid: {exc}"
        ) from None
    return AzureOpenAIClient(
        endpoint=settings.endpoint,
        auth=auth,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        backoff_seconds=settings.retry_backoff,
        max_retry_wait=settings.max_retry_wait,
    )
