"""A local emulator of the Azure OpenAI / Azure AI Foundry Files service.

Start it from a shell (``aoai-emulator --port 8080`` or ``python -m airflow_provider_aoai.emulator``) or from
Python::

    from airflow_provider_aoai.emulator import Emulator

    with Emulator(api_key="test-key", processing_seconds=0.2) as emu:
        emu.url                      # http://127.0.0.1:<free port>
        emu.faults.inject("uploads.parts", status=503, retry_after_ms=10)
        emu.managed_identity_env()   # IDENTITY_ENDPOINT / IDENTITY_HEADER for azure-identity

Nothing heavy is imported until an emulator is started, so importing this module costs nothing at DAG parse.
"""

from __future__ import annotations

import importlib
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow_provider_aoai.emulator.faults import FaultPlan
from airflow_provider_aoai.emulator.throttle import Throttle, Throttler

if TYPE_CHECKING:
    from typing import Self

    from airflow_provider_aoai.emulator.quotas import Quotas
    from airflow_provider_aoai.emulator.store import Store

__all__ = ["EXTRA_HINT", "Emulator", "Throttle", "require_emulator_extra"]


# The emulator's stack; Airflow 3 ships all three, Airflow 2.11 needs the extra.
EXTRA_MODULES = (("starlette", "starlette"), ("uvicorn", "uvicorn"), ("python_multipart", "python-multipart"))
EXTRA_HINT = "pip install 'airflow-provider-aoai[emulator]'"


def require_emulator_extra() -> None:
    """Raise an ImportError that says which extra to install, unless the emulator's stack imports."""
    missing = []
    for module, package in EXTRA_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise ImportError(
            f"the AOAI emulator needs {', '.join(missing)}; install the emulator extra: {EXTRA_HINT}"
        )


def _download(
    url: str,
    target: Path,
    max_bytes: int,
    *,
    headers: dict[str, str] | None = None,
    verify: bool | str = True,
) -> int:
    """Fetch ``url`` to ``target`` for a file import.

    Every failure is a :class:`DownloadError` whose message says what went wrong without quoting the URL or
    the source's own text (a download exception quotes the URL, SAS query included).
    """
    import requests

    from airflow_provider_aoai.emulator.errors import DownloadError

    try:
        with requests.get(url, stream=True, timeout=(10, 60), headers=headers, verify=verify) as response:
            if response.status_code >= 400:
                raise DownloadError(f"the source answered HTTP {response.status_code}")
            size = 0
            with target.open("wb") as out:
                for chunk in response.iter_content(1024 * 1024):
                    size += len(chunk)
                    if size > max_bytes:
                        raise DownloadError(f"the source is larger than the limit of {max_bytes} bytes")
                    out.write(chunk)
        return size
    except DownloadError:
        raise
    except requests.exceptions.SSLError:
        raise DownloadError("the TLS handshake with the source failed") from None
    except requests.exceptions.Timeout:
        raise DownloadError("the source did not answer in time") from None
    except requests.exceptions.ConnectionError:
        raise DownloadError("the source could not be reached") from None
    except (requests.exceptions.InvalidURL, requests.exceptions.URLRequired, ValueError):
        raise DownloadError("the URL is not valid") from None
    except requests.exceptions.RequestException as exc:
        raise DownloadError(f"the download failed ({type(exc).__name__})") from None


def _quiet_exit_server_class() -> type:
    import contextlib
    import signal

    import uvicorn

    class QuietExitServer(uvicorn.Server):
        """Stops on SIGINT/SIGTERM and returns normally (uvicorn re-raises the signal after shutdown)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return

            def stop(signum: int, frame: object) -> None:
                self.should_exit = True

            previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return QuietExitServer


def _QuietExitServer(config: Any) -> Any:
    return _quiet_exit_server_class()(config)


class Emulator:
    """The emulator as a context manager: starts on a free port in a background thread, stops cleanly.

    :param host: interface to listen on.
    :param port: TCP port; 0 picks a free one.
    :param api_key: the key clients must send; ``None`` accepts any non-empty key.
    :param data_dir: where files and metadata live; reopened on restart. ``None``: a temporary directory,
        removed on stop.
    :param processing_seconds: how long a new file takes from ``pending`` through ``running`` to its final
        status.
    :param upload_expiry_seconds: lifetime of an Upload (the service's is one hour).
    :param max_file_bytes: / max_upload_bytes / max_part_bytes: size limits (the service's by default).
    :param quotas: per-resource file quotas (:class:`~airflow_provider_aoai.emulator.quotas.Quotas`; the
        service's by default).
    :param throttle: per-resource request rates (:class:`~airflow_provider_aoai.emulator.throttle.Throttle`;
        the service's by default: 30 creates and 30 parts a second, reads unlimited; ``Throttle.off()`` for
        none). ``emu.throttler`` changes them at run time and counts what was allowed and throttled.
    :param token_lifetime_seconds: lifetime of the Entra ID tokens the emulator issues.
    :param tls: serve https with a self-signed certificate (``ca_cert_path``), as azure-identity's
        client-secret and workload-identity flows need an https authority. The emulator then also acts as
        the Entra ID authority ``url`` (client secret ``identity.client_secret``, federated token
        ``identity.federated_token``).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        data_dir: str | Path | None = None,
        processing_seconds: float = 1.0,
        upload_expiry_seconds: float | None = None,
        max_file_bytes: int | None = None,
        max_upload_bytes: int | None = None,
        max_part_bytes: int | None = None,
        quotas: Quotas | None = None,
        throttle: Throttle | None = None,
        token_lifetime_seconds: int = 3600,
        tls: bool = False,
        log_level: str = "warning",
    ) -> None:
        from airflow_provider_aoai.emulator.quotas import Quotas
        from airflow_provider_aoai.emulator.store import Limits

        self.host = host
        self.port = port
        self.api_key = api_key
        self.log_level = log_level
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.limits = Limits(processing_seconds=processing_seconds, quotas=quotas or Quotas())
        if upload_expiry_seconds is not None:
            self.limits.upload_expiry_seconds = upload_expiry_seconds
        for name, value in (
            ("max_file_bytes", max_file_bytes),
            ("max_upload_bytes", max_upload_bytes),
            ("max_part_bytes", max_part_bytes),
        ):
            if value is not None:
                setattr(self.limits, name, value)
        self.token_lifetime_seconds = token_lifetime_seconds
        self.tls = tls
        self.ca_cert_path: Path | None = None
        self._key_path: Path | None = None
        self.faults = FaultPlan()
        self.throttler = Throttler(throttle)
        self.store: Store | None = None
        self.identity: Any = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._internal_token = secrets.token_urlsafe(32)

    # ---------------------------------------------------------------- lifecycle
    def build_app(self) -> Any:
        """Create the store and the ASGI app (also used by the command line, which runs it itself).

        :raises ImportError: the emulator's stack is missing; the message names the extra to install.
        """
        require_emulator_extra()
        from airflow_provider_aoai.emulator.app import EmulatorApp
        from airflow_provider_aoai.emulator.identity import Identity
        from airflow_provider_aoai.emulator.store import Store

        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="aoai-emulator-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        blob_dir = self.data_dir / "container"
        blob_dir.mkdir(exist_ok=True)
        self.store = Store(self.data_dir, self.limits, download=self._download)
        self.identity = Identity(token_lifetime_seconds=self.token_lifetime_seconds)
        if self.tls:
            from airflow_provider_aoai.emulator.tls import make_self_signed

            self.ca_cert_path, self._key_path = make_self_signed(self.data_dir / "tls", self.host)
        return EmulatorApp(
            self.store,
            api_key=self.api_key,
            identity=self.identity,
            faults=self.faults,
            blob_dir=blob_dir,
            internal_token=self._internal_token,
            throttler=self.throttler,
        )

    def _download(self, url: str, target: Path, max_bytes: int) -> int:
        """The import downloader: our own blob container lets us in without the api key (and, in TLS
        mode, is trusted through our own certificate); any other source gets no credential of ours."""
        from airflow_provider_aoai.emulator.routing import INTERNAL_HEADER

        try:
            parts = urlsplit(url)
            own = (
                parts.scheme == ("https" if self.tls else "http")
                and (parts.hostname or "").lower() == self.host.lower()
                and parts.port == self.port
                and parts.path.startswith("/_emulator/blobs/")
            )
        except ValueError:
            own = False
        if not own:
            return _download(url, target, max_bytes)
        verify: bool | str = str(self.ca_cert_path) if self.tls and self.ca_cert_path else True
        return _download(
            url, target, max_bytes, headers={INTERNAL_HEADER: self._internal_token}, verify=verify
        )

    def bind(self) -> socket.socket:
        """Bind and listen, so the port is known (and reachable) before the server loop starts."""
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self._socket = sock
        return sock

    def server(self, app: Any) -> Any:
        import uvicorn

        config = uvicorn.Config(
            app,
            interface="asgi3",
            lifespan="off",
            log_level=self.log_level,
            access_log=False,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=2,
            proxy_headers=False,
            ssl_certfile=str(self.ca_cert_path) if self.tls else None,
            ssl_keyfile=str(self._key_path) if self.tls else None,
        )
        self._server = _QuietExitServer(config)
        return self._server

    def start(self, timeout: float = 30.0) -> Self:
        app = self.build_app()
        sock = self.bind()
        server = self.server(app)
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="aoai-emulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the AOAI emulator did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self.store is not None:
            self.store.close()
        if self._own_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- helpers for tests and DAGs
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def project_url(self, project: str = "demo") -> str:
        """A Foundry project endpoint served by this emulator; its OpenAI route is this URL + ``/openai``."""
        return f"{self.url}/api/projects/{project}"

    @property
    def identity_endpoint(self) -> str:
        return f"{self.url}/_emulator/identity/token"

    def managed_identity_env(self) -> dict[str, str]:
        """Environment that makes azure-identity's ManagedIdentityCredential use this emulator."""
        return {"IDENTITY_ENDPOINT": self.identity_endpoint, "IDENTITY_HEADER": self.identity.header_secret}

    def blob_url(self, name: str, sas: str = "sv=2024-05-04&sr=b&sig=emulator-signature") -> str:
        """URL of a blob in the emulator's container, with a SAS-like query (never verified: the emulator's
        own imports may read it, anyone else needs the api key)."""
        return f"{self.url}/_emulator/blobs/{quote(name, safe='')}?{sas}"

    def put_blob(self, name: str, data: bytes) -> str:
        """Store ``data`` as a blob and return its SAS-like URL, for import tests.

        :raises RuntimeError: the emulator is not started.
        :raises ValueError: ``name`` cannot name a blob (see ``PUT /_emulator/blobs/{name}``).
        """
        if self.data_dir is None or self.store is None:
            raise RuntimeError(
                "the emulator is not started: call start() or use it as a context manager first"
            )
        from airflow_provider_aoai.emulator.control import blob_name_problem

        problem = blob_name_problem(name)
        if problem is not None:
            raise ValueError(f"name: {problem}, got {name!r}")
        (self.data_dir / "container" / name).write_bytes(data)
        return self.blob_url(name)
