"""Token issuers: the managed-identity endpoint (App Service flavour) and, in TLS mode, an Entra ID authority.

Tokens are opaque random strings; :class:`Identity` remembers each one's audience and expiry, which is what
the data-plane authentication checks.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.responses import JSONResponse, Response

from airflow_provider_aoai.models import Surface
from airflow_provider_aoai.redaction import redact

if TYPE_CHECKING:
    from starlette.requests import Request

# A tenant id (GUID) or domain name, or one of the authority's aliases ("common", "organizations").
TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")
MAX_TOKEN_REQUEST = 64 * 1024


@dataclass
class Identity:
    """The managed-identity token service (App Service flavour, api-version 2019-08-01)."""

    header_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    token_lifetime_seconds: int = 3600
    client_id: str = "00000000-0000-0000-0000-00000000e1a1"
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (audience, expires_on)
    issued: int = 0
    # Entra ID (TLS mode): any tenant and client id; the secret or federated assertion must match these.
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    federated_token: str = field(default_factory=lambda: secrets.token_urlsafe(48))

    def issue(self, resource: str) -> dict[str, Any]:
        token = "emu." + secrets.token_urlsafe(32)
        expires_on = int(time.time()) + self.token_lifetime_seconds
        self.tokens[token] = (resource.rstrip("/"), expires_on)
        self.issued += 1
        return {
            "access_token": token,
            "expires_on": str(expires_on),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": self.client_id,
        }

    def audience_of(self, token: str) -> str | None:
        entry = self.tokens.get(token)
        if entry is None or entry[1] <= time.time():
            return None
        return entry[0]


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": redact(description)}, status_code=status)


def _invalid_tenant() -> JSONResponse:
    return _oauth_error(
        400,
        "invalid_request",
        "AADSTS900023: Specified tenant identifier is neither a valid DirectoryName nor a valid ObjectId.",
    )


class IdentityEndpoints:
    """``/_emulator/identity/token`` and the Entra ID authority ``/{tenant}/...``."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    async def identity_token(self, request: Request) -> Response:
        presented = request.headers.get("x-identity-header", "")
        if not hmac.compare_digest(presented.encode(), self.identity.header_secret.encode()):
            return JSONResponse({"statusCode": 401, "message": "Invalid X-IDENTITY-HEADER."}, status_code=401)
        resource = request.query_params.get("resource", "").rstrip("/")
        if resource not in (Surface.DATA_PLANE.token_audience, Surface.FOUNDRY.token_audience):
            return JSONResponse(
                {"statusCode": 400, "message": redact(f"Unknown resource '{resource}'.")}, status_code=400
            )
        return JSONResponse(self.identity.issue(resource))

    async def openid_configuration(self, request: Request) -> Response:
        """OIDC discovery for the emulated Entra ID authority ``{emulator url}/{tenant}`` (TLS mode)."""
        tenant = request.path_params["tenant"]
        if not TENANT.fullmatch(tenant):
            return _invalid_tenant()
        base = f"{str(request.base_url).rstrip('/')}/{tenant}"
        return JSONResponse(
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            }
        )

    async def entra_token(self, request: Request) -> Response:
        """The client-credentials grant with a client secret or a federated (workload identity) assertion."""
        if not TENANT.fullmatch(request.path_params["tenant"]):
            return _invalid_tenant()
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_TOKEN_REQUEST:
            return _oauth_error(413, "invalid_request", "AADSTS90020: The request body is too large.")
        try:
            form = await request.form(max_files=0, max_fields=32)
        except (HTTPException, MultiPartException):
            return _oauth_error(400, "invalid_request", "AADSTS900144: The request body is not a valid form.")
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        secret, assertion = str(form.get("client_secret") or ""), str(form.get("client_assertion") or "")
        if secret:
            valid = hmac.compare_digest(secret.encode(), self.identity.client_secret.encode())
        else:
            valid = bool(assertion) and hmac.compare_digest(
                assertion.encode(), self.identity.federated_token.encode()
            )
        if not valid or not form.get("client_id"):
            return JSONResponse(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret or assertion.",
                },
                status_code=401,
            )
        resource = str(form.get("scope") or "").removesuffix("/.default")
        if resource not in (Surface.DATA_PLANE.token_audience, Surface.FOUNDRY.token_audience):
            return _oauth_error(400, "invalid_scope", f"Unknown scope {resource!r}.")
        issued = self.identity.issue(resource)
        lifetime = int(issued["expires_on"]) - int(time.time())
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": issued["access_token"],
            }
        )
