"""Where a request goes: an endpoint, the surface it addresses, its api-version and the URL of a path.

Addressing
    A request path is a sequence of segments (``("files", file_id, "content")``). Every segment is
    percent-encoded with nothing safe, so an id is always one opaque path segment: ``a/b``, ``..``, ``#`` or
    ``?`` inside an id can never reach another object or operation.

No I/O here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from airflow_provider_aoai.exceptions import AzureOpenAIConfigError
from airflow_provider_aoai.models import Surface, has_space_or_control, offers_expiry
from airflow_provider_aoai.redaction import redact_url
from airflow_provider_aoai.urls import is_loopback, is_valid_host

DATA_PLANE_API_VERSION = "2024-10-21"
FOUNDRY_API_VERSION = "v1"
# What azure-ai-projects 2.x sends on a project's OpenAI route (tests/specs/recordings).
FOUNDRY_OPENAI_API_VERSION = "2025-11-15-preview"
# A Foundry project's two routes: its agents' files (the default, as the seed spec has it), or OpenAI's
# files API.
FOUNDRY_ROUTES = ("agents", "openai")

Path = Sequence[str]

_PREFIXES = {
    Surface.DATA_PLANE: "/openai",
    Surface.V1: "/openai/v1",
    Surface.FOUNDRY: "",
    Surface.FOUNDRY_OPENAI: "/openai",
}


def normalize_endpoint(
    endpoint: str, api_version: str | None, foundry_route: str | None = None
) -> tuple[str, Surface]:
    """Split a connection host into the base URL and the surface it addresses.

    A Foundry project endpoint addresses its agents route unless ``foundry_route`` is ``openai`` or the
    endpoint ends in ``/openai`` (its OpenAI route).

    :raises AzureOpenAIConfigError: not an http(s) URL, a bad port, credentials or a query in it, or plain
        http to a non-loopback host. Messages show the endpoint redacted.
    """
    endpoint = endpoint.strip().rstrip("/")
    shown = redact_url(endpoint)
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise AzureOpenAIConfigError(f"the endpoint {shown!r} has an invalid host or port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AzureOpenAIConfigError(f"the endpoint {shown!r} is not an http(s) URL")
    if not is_valid_host(parts.hostname):
        raise AzureOpenAIConfigError(f"the endpoint {shown!r} has an invalid host name")
    if has_space_or_control(endpoint):
        raise AzureOpenAIConfigError("the endpoint must not contain whitespace or control characters")
    if parts.username is not None or parts.password is not None:
        raise AzureOpenAIConfigError(
            "the endpoint must not carry credentials (user:password@); put the api key in the password field"
        )
    if parts.query or parts.fragment:
        raise AzureOpenAIConfigError(f"the endpoint {shown!r} must not carry a query or fragment")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise AzureOpenAIConfigError(
            f"the endpoint {shown!r} uses plain http; only https is allowed (http only on loopback)"
        )
    path = parts.path
    if "/api/projects/" in f"{path}/":
        if path.endswith("/openai") or foundry_route == "openai":
            return endpoint.removesuffix("/openai"), Surface.FOUNDRY_OPENAI
        return endpoint, Surface.FOUNDRY
    base = f"{parts.scheme}://{parts.netloc}"
    if path.endswith("/openai/v1") or api_version in ("v1", "preview"):
        return base + path.removesuffix("/openai/v1"), Surface.V1
    return base + path.removesuffix("/openai"), Surface.DATA_PLANE


def default_api_version(surface: Surface, api_version: str | None) -> str | None:
    """The api-version sent to ``surface`` when the connection sets ``api_version`` (``None``: not set)."""
    if surface is Surface.DATA_PLANE:
        return api_version or DATA_PLANE_API_VERSION
    if surface is Surface.FOUNDRY:
        return FOUNDRY_API_VERSION if api_version in (None, "v1", DATA_PLANE_API_VERSION) else api_version
    if surface is Surface.FOUNDRY_OPENAI:
        return FOUNDRY_OPENAI_API_VERSION if api_version in (None, "v1", "preview") else api_version
    return api_version if api_version not in (None, "v1") else None


def quoted(path: Path) -> str:
    """``path`` as a URL path: every segment percent-encoded with nothing safe (an id is one segment)."""
    if isinstance(path, str):
        raise TypeError("path must be a sequence of segments, e.g. ('files', file_id)")
    return "/".join(quote(segment, safe="") for segment in path)


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of the service: base URL (no trailing slash), surface and the api-version it is sent."""

    base_url: str
    surface: Surface
    api_version: str | None

    @classmethod
    def of(cls, endpoint: str, api_version: str | None = None, foundry_route: str | None = None) -> Endpoint:
        """:raises AzureOpenAIConfigError: see :func:`normalize_endpoint`."""
        base_url, surface = normalize_endpoint(endpoint, api_version, foundry_route)
        return cls(base_url, surface, default_api_version(surface, api_version))

    @property
    def host(self) -> str:
        """The endpoint's scheme, host and port, for messages."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def offers_expiry(self) -> bool:
        """Whether file and upload creates here take ``expires_after`` (see :func:`offers_expiry`)."""
        return offers_expiry(self.surface, self.api_version)

    def url(self, path: Path) -> str:
        """The URL of ``path`` under this endpoint's surface (without the api-version)."""
        return f"{self.base_url}{_PREFIXES[self.surface]}/{quoted(path)}"
