"""AzureOpenAIHook: an Airflow ``aoai`` connection -> the Files service of Azure OpenAI or a Foundry project.

The hook keeps what is Airflow's (the connection, its form, ``test_connection``) and hands out one service
per concern, all on the connection's client: ``files``, ``uploads``, ``multipart`` (whole files through the
Uploads API), ``waits`` and ``retention``. Its other public methods are those services' methods, under the
same names and signatures, so ``hook.upload_file(...)`` is ``hook.files.upload_file(...)``.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook

from airflow_provider_aoai.connection import build_client
from airflow_provider_aoai.exceptions import AzureOpenAIConfigError, AzureOpenAIError
from airflow_provider_aoai.models import ObjectKind, Surface
from airflow_provider_aoai.redaction import redact
from airflow_provider_aoai.resources.files import Files
from airflow_provider_aoai.resources.uploads import Uploads
from airflow_provider_aoai.resources.waits import Waits
from airflow_provider_aoai.retention import Retention
from airflow_provider_aoai.transfer.multipart import MultipartUploads
from airflow_provider_aoai.validation import check_text

if TYPE_CHECKING:
    from airflow_provider_aoai.http.client import AzureOpenAIClient
    from airflow_provider_aoai.sources import Source

# test_connection answers within this, whatever the connection's timeout: it is a question, not a job.
TEST_CONNECTION_TIMEOUT = 15.0

P = ParamSpec("P")
R = TypeVar("R")


class _Service(Generic[P, R]):
    """A hook method that is a service's method: the same name, signature and docstring.

    The service (and the client under it) is built when the method is called, not when it is looked up.
    """

    def __init__(self, service: str, method: Callable[Concatenate[Any, P], R]) -> None:
        self.service = service
        self.name = method.__name__
        self.__doc__ = method.__doc__
        signature = inspect.signature(method)
        self.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])

    @overload
    def __get__(self, hook: None, owner: type) -> _Service[P, R]: ...

    @overload
    def __get__(self, hook: AzureOpenAIHook, owner: type) -> Callable[P, R]: ...

    def __get__(self, hook: AzureOpenAIHook | None, owner: type) -> Any:
        if hook is None:
            return self
        service, name = self.service, self.name

        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            return getattr(getattr(hook, service), name)(*args, **kwargs)

        call.__name__ = call.__qualname__ = name
        call.__doc__ = self.__doc__
        call.__signature__ = self.__signature__  # type: ignore[attr-defined]
        return call


class AzureOpenAIHook(BaseHook):
    """Talk to the Files service of an Azure OpenAI resource or an Azure AI Foundry project.

    The connection's host is the endpoint: ``https://<name>.openai.azure.com``,
    ``https://<name>.cognitiveservices.azure.com`` or ``https://<name>.services.ai.azure.com/api/projects/<p>``.
    The password is the api key; extras pick the api-version and the Entra ID auth mode (``docs/``).

    Errors every method may raise: :class:`AzureOpenAIConfigError` (unusable connection, naming the field),
    :class:`AzureOpenAICredentialError` (no Entra ID token), an :class:`AzureOpenAIAPIError` subclass per HTTP
    status (with code, message, target and request id) once retries are exhausted or when retrying could not
    help, :class:`AzureOpenAIResponseError` when a success answer is not the promised object, and
    :class:`AzureOpenAIConnectionError` when the service cannot be reached. Arguments are checked first:
    :class:`AzureOpenAIInvalidArgumentError` and :class:`AzureOpenAIUnsupportedOperationError` are raised
    before any request. No message carries a secret.

    :param aoai_conn_id: the Airflow connection id (type ``aoai``).
    """

    conn_name_attr = "aoai_conn_id"
    default_conn_name = "aoai_default"
    conn_type = "aoai"
    hook_name = "Azure OpenAI Files"

    def __init__(self, aoai_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aoai_conn_id = check_text(aoai_conn_id, "aoai_conn_id", max_chars=250)

    @classmethod
    def from_client(cls, client: AzureOpenAIClient, aoai_conn_id: str = default_conn_name) -> AzureOpenAIHook:
        """A hook that sends its requests through ``client`` (one shared by the triggers of a process, see
        :mod:`~airflow_provider_aoai.shared_clients`) instead of building its own from the connection."""
        hook = cls(aoai_conn_id=aoai_conn_id)
        hook.__dict__["client"] = client  # what the cached property would have built
        return hook

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Airflow 2 reads this; Airflow 3 reads the same dict from the provider info."""
        from airflow_provider_aoai.provider_info import UI_FIELD_BEHAVIOUR

        return {key.replace("-", "_"): value for key, value in UI_FIELD_BEHAVIOUR.items()}

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Airflow 2's connection form, built from the ``conn-fields`` that Airflow 3 reads directly."""
        from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import PasswordField, StringField

        from airflow_provider_aoai.provider_info import CONN_FIELDS

        widgets = {}
        for name, field in CONN_FIELDS.items():
            secret = field["schema"].get("format") == "password"
            kind, widget = (
                (PasswordField, BS3PasswordFieldWidget) if secret else (StringField, BS3TextFieldWidget)
            )
            widgets[name] = kind(
                lazy_gettext(field["label"]), description=field["description"], widget=widget()
            )
        return widgets

    # ------------------------------------------------------------------------------ connection
    @cached_property
    def client(self) -> AzureOpenAIClient:
        """The HTTP client for this connection, built on first use (no request is sent).

        :raises AzureOpenAIConfigError: a connection field is missing or invalid (the message names it).
        """
        try:
            conn = self.get_connection(self.aoai_conn_id)
        except AirflowNotFoundException:
            raise AzureOpenAIConfigError(
                f"Connection {self.aoai_conn_id!r} is not defined (in the metadata database, an "
                f"AIRFLOW_CONN_{self.aoai_conn_id.upper()} variable or a secrets backend)"
            ) from None
        client = build_client(conn, self.aoai_conn_id)
        self.log.debug("Connection %s -> %s (%s)", self.aoai_conn_id, client.base_url, client.surface.value)
        return client

    @property
    def surface(self) -> Surface:
        return self.client.surface

    def get_conn(self) -> AzureOpenAIClient:
        return self.client

    def test_connection(self) -> tuple[bool, str]:
        """List files once to prove the endpoint, the credentials and the api-version work together.

        Never raises: every failure is ``(False, message)``. It does not retry and waits at most
        :data:`TEST_CONNECTION_TIMEOUT` seconds, so an unreachable endpoint answers at once, naming the
        endpoint and the cause (name not resolved, refused, timed out, TLS).
        """
        try:
            client = self.client
            # A per-read timeout does not bound an answer that trickles in: the deadline shuts the socket.
            deadline = threading.Timer(TEST_CONNECTION_TIMEOUT, client.abort_in_flight)
            deadline.daemon = True
            deadline.start()
            try:
                page = client.request_object(
                    "GET",
                    ("files",),
                    expect=ObjectKind.LIST,
                    max_retries=0,
                    timeout=min(client.timeout, TEST_CONNECTION_TIMEOUT),
                )
            finally:
                deadline.cancel()
        except AzureOpenAIError as exc:
            return False, str(exc)
        except Exception as exc:
            return False, redact(f"{type(exc).__name__}: {exc}")
        count = len(page["data"])
        more = "+" if page.get("has_more") else ""
        return True, redact(
            f"Connected to {client.base_url} ({client.surface.value}); {count}{more} file(s) visible."
        )

    def abort_in_flight(self) -> None:
        """Shut the sockets of requests under way (``on_kill``); a no-op before the client exists."""
        if "client" in self.__dict__:
            aborted = self.client.abort_in_flight()
            if aborted:
                self.log.info("Aborted %d request(s) in flight", aborted)

    # ------------------------------------------------------------------------------ the services
    @cached_property
    def files(self) -> Files:
        """Files: import, upload in one request, get, list, delete, download, wait, find."""
        return Files(self.client, conn_id=self.aoai_conn_id, log=self.log)

    @cached_property
    def uploads(self) -> Uploads:
        """The Uploads API, one request each: create, add a part, complete, cancel."""
        return Uploads(self.client, self.files, conn_id=self.aoai_conn_id, log=self.log)

    @cached_property
    def multipart(self) -> MultipartUploads:
        """Whole files through the Uploads API: parts in parallel, md5, complete, resume."""
        return MultipartUploads(self.files, self.uploads)

    @cached_property
    def waits(self) -> Waits:
        """Waits for processing, in the worker (the triggerer's are the trigger's)."""
        return Waits(self.files)

    @cached_property
    def retention(self) -> Retention:
        """Prune files by a retention rule."""
        return Retention(self.files)

    def check_import_file(self, *, content_url: Any, filename: Any, purpose: Any) -> None:
        """Everything :meth:`import_file` checks before its request (see :meth:`Files.prepare_import`)."""
        self.files.prepare_import(content_url=content_url, filename=filename, purpose=purpose)

    def check_upload_file(self, *, source: Any, purpose: Any, filename: Any = None) -> tuple[Source, str]:
        """Everything :meth:`upload_file` checks before its request; returns the source and the name."""
        request = self.files.prepare_upload(source=source, purpose=purpose, filename=filename)
        return request.source, request.filename

    import_file = _Service("files", Files.import_file)
    upload_file = _Service("files", Files.upload_file)
    get_file = _Service("files", Files.get_file)
    status_of = _Service("files", Files.status_of)
    content_md5 = _Service("files", Files.content_md5)
    list_files = _Service("files", Files.list_files)
    delete_file = _Service("files", Files.delete_file)
    ensure_file_deleted = _Service("files", Files.ensure_file_deleted)
    download_file = _Service("files", Files.download_file)
    wait_for_file = _Service("waits", Waits.wait_for_file)
    find_files = _Service("files", Files.find_files)
    create_upload = _Service("uploads", Uploads.create_upload)
    add_upload_part = _Service("uploads", Uploads.add_upload_part)
    complete_upload = _Service("uploads", Uploads.complete_upload)
    cancel_upload = _Service("uploads", Uploads.cancel_upload)
    cancel_upload_quietly = _Service("uploads", Uploads.cancel_upload_quietly)
    upload_multipart = _Service("multipart", MultipartUploads.upload_multipart)
    prune_files = _Service("retention", Retention.prune_files)
