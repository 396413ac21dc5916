"""Routing on the raw request path, and the checks every request passes before its handler runs.

An id is one opaque path segment, as on the service: the raw path (``scope["raw_path"]``, not uvicorn's
percent-decoded ``scope["path"]``) is split on ``/`` first and each segment is percent-decoded on its own, so
``/openai/files/<id>%2Fcontent`` is ``files.get`` of the file ``<id>/content`` (a 404), never its content.
The same holds for upload ids, Foundry project names, blob names and tenants. A path parameter with a control
character or bytes that are not UTF-8 is refused with a 400.

Before a handler runs, :meth:`Router.handle` checks, in order: the api-version, the service's auth rules and
the resource's rate limits (service operations; see :mod:`.throttle`), or the api key (the ``/_emulator/*``
control endpoints); then the path parameters.
Every :class:`StoreError` answers in the surface's own error shape, and so does any unexpected exception (a
500 that names only the exception type).
"""

from __future__ import annotations

import datetime
import enum
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, unquote_to_bytes

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from airflow_provider_aoai.emulator.errors import StoreError, bad, error_response
from airflow_provider_aoai.models import CONTROL_CHARACTERS, Surface
from airflow_provider_aoai.redaction import redact_encoded

if TYPE_CHECKING:
    from airflow_provider_aoai.emulator.identity import Identity

log = logging.getLogger(__name__)

# api-versions of the authoring spec family: with the Uploads API, and without it (files only).
UPLOADS_API_VERSIONS = frozenset(
    {
        "2024-08-01-preview",
        "2024-09-01-preview",
        "2024-10-01-preview",
        "2024-10-21",
        "2025-03-01-preview",
        "2025-04-01-preview",
    }
)
# 2025-01-01-preview: recorded serving files (tests/specs/recordings/aoai_*_2025-01-01-preview.json); no
# recording or spec of ours shows its uploads.
FILES_API_VERSIONS = UPLOADS_API_VERSIONS | {"2024-06-01", "2024-07-01-preview", "2025-01-01-preview"}
V1_API_VERSIONS = frozenset({"v1", "preview"})
FOUNDRY_API_VERSIONS = frozenset({"v1"})
# A project's OpenAI route: the version azure-ai-projects 2.x sends (recorded), and any later dated preview
# (our decision: no recording shows another; a GA date or "v1" is not served).
FOUNDRY_OPENAI_FIRST_API_VERSION = "2025-11-15-preview"
_DATED_PREVIEW = re.compile(r"(\d{4})-(\d{2})-(\d{2})-preview")

SURFACE_PREFIXES = {
    Surface.V1: "/openai/v1",
    Surface.DATA_PLANE: "/openai",
    Surface.FOUNDRY: "/api/projects/{project}",
    Surface.FOUNDRY_OPENAI: "/api/projects/{project}/openai",
}

# Sent by the emulator's own import downloader to its own blob container (see ControlEndpoints.blob).
INTERNAL_HEADER = "x-aoai-emulator-internal"

Handler = Callable[[Request, Surface], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]
# Judges an authenticated request of a service operation: None lets it through, a Response answers instead.
Admit = Callable[[Request, "Route"], Awaitable[Response | None]]


class Access(enum.Enum):
    """Who may call a route that is not an operation of the service."""

    OPEN = "open"  # health, and the token issuers (which check their own credentials)
    KEY = "key"  # the emulator's api key, when it has one
    KEY_OR_INTERNAL = "key_or_internal"  # blob GET: the api key, or the emulator's own import download


# ------------------------------------------------------------------------------------------ raw paths
def split_raw_path(raw_path: bytes) -> list[str] | None:
    """The path's segments, each percent-decoded on its own; ``None`` for a target that is not a path.

    Bytes that are not UTF-8 survive as lone surrogates (``surrogateescape``) so that routing can go on and
    :func:`check_path_params` can refuse them by name.
    """
    text = raw_path.decode("latin-1")
    if not text.startswith("/"):
        return None  # "*" (OPTIONS) or an absolute-form target: no operation of ours
    return [unquote_to_bytes(segment).decode("utf-8", "surrogateescape") for segment in text[1:].split("/")]


def raw_path_of(scope: dict[str, Any]) -> bytes:
    raw = scope.get("raw_path")
    if raw is None:  # optional in ASGI; uvicorn always sets it
        raw = quote(scope["path"], safe="/").encode("ascii")
    return raw


def surface_of(segments: list[str] | None) -> Surface:
    """The surface whose error shape answers a path (also one that is not an operation)."""
    if segments and segments[0] == "openai":
        return Surface.V1 if segments[1:2] == ["v1"] else Surface.DATA_PLANE
    if segments and segments[:2] == ["api", "projects"]:
        return Surface.FOUNDRY_OPENAI if segments[3:4] == ["openai"] else Surface.FOUNDRY
    return Surface.DATA_PLANE


def check_path_params(params: dict[str, str]) -> None:
    """Refuse ids that no service object can have: control characters, or bytes that are not UTF-8."""
    for name, value in params.items():
        if any(0xDC80 <= ord(char) <= 0xDCFF for char in value):
            raise bad(f"'{name}' in the path is not valid UTF-8.", name)
        if CONTROL_CHARACTERS.search(value):
            raise bad(f"'{name}' in the path must not contain control characters.", name)


# ------------------------------------------------------------------------------------------ the rules
def foundry_openai_serves(version: str) -> bool:
    """Whether a project's OpenAI route serves ``version``: a real date's ``YYYY-MM-DD-preview``, from
    :data:`FOUNDRY_OPENAI_FIRST_API_VERSION` on."""
    match = _DATED_PREVIEW.fullmatch(version)
    if match is None:
        return False
    try:
        datetime.date(*(int(part) for part in match.groups()))
    except ValueError:
        return False
    return version >= FOUNDRY_OPENAI_FIRST_API_VERSION


def check_api_version(request: Request, surface: Surface, operation: str) -> None:
    version = request.query_params.get("api-version")
    if surface is Surface.V1:
        if version is not None and version not in V1_API_VERSIONS:
            raise bad(
                f"Unsupported api-version '{version}'; use 'v1' or 'preview' (or omit it).", "api-version"
            )
        return
    if not version:
        raise bad("The api-version query parameter is required.", "api-version")
    if surface is Surface.FOUNDRY_OPENAI:
        served = foundry_openai_serves(version)
    elif surface is Surface.FOUNDRY:
        served = version in FOUNDRY_API_VERSIONS
    else:
        served = version in (UPLOADS_API_VERSIONS if operation.startswith("uploads.") else FILES_API_VERSIONS)
    if not served:
        # The service answers an api-version it does not serve as an unknown resource.
        raise StoreError(
            404,
            "notFound",
            f"Resource not found: api-version '{version}' does not offer this operation.",
            "api-version",
        )


def _bearer(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


class Authenticator:
    """The service's auth rules (an api key, or an Entra ID token whose audience matches the surface), and
    the control endpoints' rule (the api key).

    :param api_key: the key clients must send; ``None`` accepts any non-empty key on the service's surfaces
        and leaves the control endpoints open.
    :param internal_token: the value of :data:`INTERNAL_HEADER` the emulator's own downloader sends.
    """

    def __init__(self, api_key: str | None, identity: Identity, internal_token: str) -> None:
        self.api_key = api_key
        self.identity = identity
        self.internal_token = internal_token

    def key_matches(self, presented: str) -> bool:
        if self.api_key is None:
            return bool(presented)
        return hmac.compare_digest(presented.encode(), self.api_key.encode())

    def authenticate(self, request: Request, surface: Surface) -> None:
        api_key = request.headers.get("api-key")
        bearer = _bearer(request)
        if surface.is_foundry and api_key is not None and not bearer:
            raise StoreError(
                401,
                "unauthorized",
                "Foundry project endpoints accept only Microsoft Entra ID bearer tokens "
                "(scope https://ai.azure.com/.default).",
            )
        if bearer:
            audience = self.identity.audience_of(bearer)
            if audience == surface.token_audience:
                return
            if audience is not None:
                raise StoreError(
                    401,
                    "unauthorized",
                    "The bearer token's audience is not valid for this endpoint; "
                    f"expected {surface.token_audience}.",
                )
            # v1 also takes the api key as a bearer value (spec: ApiKeyAuth_ on the authorization header).
            if surface is Surface.V1 and self.key_matches(bearer):
                return
            raise StoreError(401, "unauthorized", "The bearer token is invalid or has expired.")
        if api_key is not None and not surface.is_foundry:
            if self.key_matches(api_key):
                return
            raise StoreError(
                401,
                "unauthorized",
                "Access denied due to invalid subscription key or wrong API endpoint.",
            )
        raise StoreError(
            401, "unauthorized", "Missing credentials: send an api-key header or a bearer token."
        )

    def authorize(self, request: Request, access: Access) -> None:
        """The rule of a route that is not a service operation."""
        if access is Access.OPEN or self.api_key is None:
            return
        if access is Access.KEY_OR_INTERNAL and hmac.compare_digest(
            request.headers.get(INTERNAL_HEADER, "").encode(), self.internal_token.encode()
        ):
            return
        presented = request.headers.get("api-key") or _bearer(request)
        if presented and self.key_matches(presented):
            return
        raise StoreError(
            401,
            "unauthorized",
            "The emulator's control endpoints need its api key: send the api-key header "
            "or Authorization: Bearer <api key>.",
        )


# ------------------------------------------------------------------------------------------ the router
@dataclass(frozen=True)
class Route:
    """``methods`` of the path ``template`` (literal segments and ``{name}`` parameters)."""

    methods: frozenset[str]
    template: tuple[str, ...]
    endpoint: Endpoint
    surface: Surface | None = None  # set for the service's operations
    operation: str | None = None
    access: Access = Access.OPEN  # for the other routes

    def match(self, segments: list[str]) -> dict[str, str] | None:
        if len(segments) != len(self.template):
            return None
        params: dict[str, str] = {}
        for expected, actual in zip(self.template, segments, strict=True):
            if expected.startswith("{"):
                if not actual:
                    return None
                params[expected[1:-1]] = actual
            elif expected != actual:
                return None
        return params


@dataclass
class Resolved:
    """What a request addresses: its route (``None``: no operation here), path parameters and surface."""

    method: str
    raw_path: str
    route: Route | None
    params: dict[str, str] = field(default_factory=dict)
    allowed: frozenset[str] = frozenset()  # methods served at this path, for a 405
    surface: Surface = Surface.DATA_PLANE

    @property
    def operation(self) -> str | None:
        return self.route.operation if self.route is not None else None

    @property
    def display_path(self) -> str:
        """The path decoded, for messages (redaction sees ``?sig=...`` only once it is decoded)."""
        return unquote(self.raw_path, errors="replace")

    def logged_path(self) -> str:
        """The raw path for the request log; a segment that carries a secret is rewritten redacted.

        The project's one redaction rule applies to every segment, however often it was percent-encoded,
        so an id that reads as a query pair (``sv=...&sig=...``) is logged with its values redacted: the log
        never trades a secret for fidelity.
        """
        logged = []
        for segment in self.raw_path.split("/"):
            decoded = unquote(segment, errors="replace")
            clean = redact_encoded(decoded)
            logged.append(segment if clean == decoded else quote(clean, safe=""))
        return "/".join(logged)


def _template(path: str) -> tuple[str, ...]:
    return tuple(path[1:].split("/"))


class Router:
    """The route table: service operations per surface, and the emulator's own endpoints.

    :param admit: called for each authenticated request of a service operation, before its handler (the rate
        limits); what it answers, if anything, is the answer.
    """

    def __init__(self, authenticator: Authenticator, admit: Admit | None = None) -> None:
        self.authenticator = authenticator
        self.admit = admit
        self.routes: list[Route] = []

    def operation(self, surface: Surface, method: str, path: str, operation: str, handler: Handler) -> None:
        """Serve ``operation`` of ``surface`` at ``path`` (relative to the surface's prefix)."""

        async def endpoint(request: Request) -> Response:
            return await handler(request, surface)

        methods = {method, "HEAD"} if method == "GET" else {method}
        self.routes.append(
            Route(
                frozenset(methods), _template(SURFACE_PREFIXES[surface] + path), endpoint, surface, operation
            )
        )

    def endpoint(self, path: str, methods: list[str], endpoint: Endpoint, access: Access) -> None:
        """Serve an endpoint that is not an operation of the service (no api-version; ``access`` rules)."""
        expanded = set(methods) | ({"HEAD"} if "GET" in methods else set())
        self.routes.append(Route(frozenset(expanded), _template(path), endpoint, access=access))

    def resolve(self, scope: dict[str, Any]) -> Resolved:
        raw = raw_path_of(scope)
        segments = split_raw_path(raw)
        resolved = Resolved(scope["method"], raw.decode("latin-1"), None, surface=surface_of(segments))
        if segments is None:
            return resolved
        allowed: set[str] = set()
        for route in self.routes:
            params = route.match(segments)
            if params is None:
                continue
            if scope["method"] in route.methods:
                resolved.route, resolved.params = route, params
                return resolved
            allowed |= route.methods
        resolved.allowed = frozenset(allowed)
        return resolved

    async def handle(
        self, scope: dict[str, Any], receive: Callable, send: Callable, resolved: Resolved
    ) -> None:
        """Answer the request ``resolved`` describes."""
        scope = {**scope, "path_params": resolved.params}
        request = Request(scope, receive)
        try:
            response = await self._respond(request, resolved)
        except ClientDisconnect:
            return  # nobody is left to answer
        except Exception as exc:
            log.exception("the emulator failed on %s %s", resolved.method, resolved.logged_path())
            response = error_response(
                resolved.surface,
                StoreError(500, "internalFailure", f"The emulator failed: {type(exc).__name__}."),
            )
        await response(scope, receive, send)

    async def _respond(self, request: Request, resolved: Resolved) -> Response:
        route = resolved.route
        try:
            if route is None:
                status = 405 if resolved.allowed else 404
                raise StoreError(
                    status,
                    "notFound",
                    f"{resolved.method} {resolved.display_path} is not an operation of this service.",
                )
            if route.surface is not None and route.operation is not None:
                check_api_version(request, route.surface, route.operation)
                self.authenticator.authenticate(request, route.surface)
                if self.admit is not None and (refused := await self.admit(request, route)) is not None:
                    return refused
            else:
                self.authenticator.authorize(request, route.access)
            check_path_params(resolved.params)
            return await route.endpoint(request)
        except StoreError as error:
            return error_response(resolved.surface, error)
