"""Routing and the checks every service operation passes: api-version, then authentication.

:class:`Router` maps a request to an endpoint. Service operations (``files.create``, ``uploads.parts``, ...)
are registered per :class:`~airflow_provider_aoai.models.Surface`; their handlers run only after
:func:`check_api_version` and :meth:`Authenticator.authenticate`, and every :class:`StoreError` they raise
answers in the surface's own error shape.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from airflow_provider_aoai.emulator.errors import bad, error_response
from airflow_provider_aoai.emulator.identity import Identity
from airflow_provider_aoai.emulator.store import StoreError
from airflow_provider_aoai.models import Surface

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
FILES_API_VERSIONS = UPLOADS_API_VERSIONS | {"2024-06-01", "2024-07-01-preview"}
V1_API_VERSIONS = frozenset({"v1", "preview"})
FOUNDRY_API_VERSIONS = frozenset({"v1"})

SURFACE_PREFIXES = {
    Surface.V1: "/openai/v1",
    Surface.DATA_PLANE: "/openai",
    Surface.FOUNDRY: "/api/projects/{project}",
}

Handler = Callable[[Request, Surface], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def surface_of(path: str) -> Surface:
    """The surface whose error shape answers ``path`` (also for paths that are not an operation)."""
    if path.startswith("/openai/v1/"):
        return Surface.V1
    return Surface.FOUNDRY if path.startswith("/api/projects/") else Surface.DATA_PLANE


def check_api_version(request: Request, surface: Surface, operation: str) -> None:
    version = request.query_params.get("api-version")
    if surface is Surface.V1:
        if version is not None and version not in V1_API_VERSIONS:
            raise bad(
                f"Unsupported api-version '{version}'; use 'v1' or 'preview' (or omit it).", "api-version"
            )
        return
    if surface is Surface.FOUNDRY:
        allowed = FOUNDRY_API_VERSIONS
    else:
        allowed = UPLOADS_API_VERSIONS if operation.startswith("uploads.") else FILES_API_VERSIONS
    if not version:
        raise bad("The api-version query parameter is required.", "api-version")
    if version not in allowed:
        # The service answers an api-version it does not serve as an unknown resource.
        raise StoreError(
            404,
            "notFound",
            f"Resource not found: api-version '{version}' does not offer this operation.",
            "api-version",
        )


class Authenticator:
    """The service's auth rules: an api key, or an Entra ID token whose audience matches the surface.

    :param api_key: the key clients must send; ``None`` accepts any non-empty key.
    """

    def __init__(self, api_key: str | None, identity: Identity) -> None:
        self.api_key = api_key
        self.identity = identity

    def key_matches(self, presented: str) -> bool:
        if self.api_key is None:
            return bool(presented)
        return hmac.compare_digest(presented.encode(), self.api_key.encode())

    def authenticate(self, request: Request, surface: Surface) -> None:
        api_key = request.headers.get("api-key")
        authorization = request.headers.get("authorization", "")
        scheme, _, bearer = authorization.partition(" ")
        bearer = bearer.strip() if scheme.lower() == "bearer" else ""
        if surface is Surface.FOUNDRY and api_key is not None and not bearer:
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
                    f"The bearer token's audience is not valid for this endpoint; expected {surface.token_audience}.",
                )
            # v1 also takes the api key as a bearer value (spec: ApiKeyAuth_ on the authorization header).
            if surface is Surface.V1 and self.key_matches(bearer):
                return
            raise StoreError(401, "unauthorized", "The bearer token is invalid or has expired.")
        if api_key is not None and surface is not Surface.FOUNDRY:
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


class Router:
    """The route table: service operations per surface, and the emulator's own endpoints."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator
        self.routes: list[Route] = []
        self._starlette: Starlette | None = None

    def operation(self, surface: Surface, method: str, path: str, operation: str, handler: Handler) -> None:
        """Serve ``operation`` of ``surface`` at ``path`` (relative to the surface's prefix)."""

        async def endpoint(request: Request) -> Response:
            return await self._dispatch(request, surface, operation, handler)

        self.routes.append(
            Route(
                SURFACE_PREFIXES[surface] + path,
                endpoint,
                methods=[method],
                name=f"{surface.value}:{operation}",
            )
        )

    def endpoint(self, path: str, methods: list[str], endpoint: Endpoint) -> None:
        """Serve an endpoint that is not an operation of the service (no api-version, own auth)."""
        self.routes.append(Route(path, endpoint, methods=methods))

    @property
    def starlette(self) -> Starlette:
        if self._starlette is None:
            self._starlette = Starlette(
                routes=self.routes,
                exception_handlers={404: self._unknown_route, 405: self._unknown_route},
            )
        return self._starlette

    def operation_for(self, scope: dict[str, Any]) -> str | None:
        """The service operation ``scope`` addresses (``None`` for the emulator's own endpoints)."""
        for route in self.starlette.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL and route.name and ":" in route.name:
                return route.name.split(":", 1)[1]
        return None

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        await self.starlette(scope, receive, send)

    async def _unknown_route(self, request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        message = f"{request.method} {request.url.path} is not an operation of this service."
        return error_response(surface_of(request.url.path), StoreError(status, "notFound", message))

    async def _dispatch(
        self, request: Request, surface: Surface, operation: str, handler: Handler
    ) -> Response:
        try:
            check_api_version(request, surface, operation)
            self.authenticator.authenticate(request, surface)
            return await handler(request, surface)
        except StoreError as error:
            return error_response(surface, error)
