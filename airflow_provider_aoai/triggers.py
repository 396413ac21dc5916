"""AzureOpenAIFileStatusTrigger: waits in the triggerer until a file is terminal, then yields one event.

All the triggers of a process share one client per connection id
(:mod:`~airflow_provider_aoai.shared_clients`: one connection pool, one token cache, rebuilt when the
connection changes), and their polls are scheduled together (:mod:`~airflow_provider_aoai.polling`): every
blocking step (reading the connection, importing the HTTP stack, the requests) runs in worker threads, so the
triggerer's event loop never waits; polls log at debug only. Every event says why it fired in a
machine-readable ``status``; :func:`file_from_event` turns it back into the File or the matching exception,
so sensors and operators resume the same way.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_aoai.exceptions import (
    AzureOpenAIError,
    AzureOpenAIFileProcessingError,
    AzureOpenAIWaitTimeoutError,
)
from airflow_provider_aoai.models import File, FileOutcome, FileStatus, Surface, file_outcome
from airflow_provider_aoai.polling import poll_status
from airflow_provider_aoai.validation import (
    MIN_POLL_SECONDS,
    check_id,
    check_seconds,
    check_text,
    check_unix_time,
)

EVENT_SUCCESS = "success"
EVENT_FAILED = "failed"  # the file ended in error or deleted
EVENT_TIMEOUT = "timeout"  # the deadline passed first
EVENT_ERROR = "error"  # the service could not be asked (auth, 404, retries exhausted)


class AzureOpenAIFileStatusTrigger(BaseTrigger):
    """Poll a file's status until it is terminal or ``end_time`` passes.

    :param file_id: the file to watch.
    :param aoai_conn_id: the ``aoai`` connection.
    :param poll_interval: seconds between checks; at least 0.05 (a tight loop would hammer the service).
    :param end_time: give up at this UNIX time (absolute, so a triggerer restart does not extend it).
    """

    def __init__(self, *, file_id: str, aoai_conn_id: str, poll_interval: float, end_time: float) -> None:
        super().__init__()
        self.file_id = check_id(file_id, "file_id")
        self.aoai_conn_id = check_text(aoai_conn_id, "aoai_conn_id", max_chars=250)
        self.poll_interval = max(
            check_seconds(poll_interval, "poll_interval", minimum=0, allow_zero=True), MIN_POLL_SECONDS
        )
        self.end_time = check_unix_time(end_time, "end_time")

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "file_id": self.file_id,
                "aoai_conn_id": self.aoai_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        base = {"file_id": self.file_id}
        delay, since = 0.0, None  # the first poll at once, then every poll_interval
        while True:
            try:
                file, surface, since = await poll_status(self.aoai_conn_id, self.file_id, delay, since)
            except AzureOpenAIError as exc:
                yield TriggerEvent({**base, "status": EVENT_ERROR, "message": str(exc)})
                return
            outcome = file_outcome(file, surface)
            if outcome is not FileOutcome.WAITING:
                event = EVENT_FAILED if outcome is FileOutcome.FAILED else EVENT_SUCCESS
                yield TriggerEvent({**base, "status": event, "file": file, "surface": surface.value})
                return
            status = FileStatus.of(file, status_optional=surface.status_optional)
            if time.time() + self.poll_interval > self.end_time:
                message = f"File {self.file_id} is still {status.value!r} at the deadline"
                yield TriggerEvent({**base, "status": EVENT_TIMEOUT, "message": message, "file": file})
                return
            self.log.debug(
                "File %s is %s; checking again in %ss", self.file_id, status.value, self.poll_interval
            )
            delay = self.poll_interval


def file_from_event(event: Any, expected_file_id: str | None = None) -> File:
    """Validate a trigger event and return its processed File, or raise what the event stands for.

    :param expected_file_id: the file the task waited for; an event about any other file is malformed.
    :raises AzureOpenAIFileProcessingError: the file ended in ``error`` or ``deleted``.
    :raises AzureOpenAIWaitTimeoutError: the deadline passed.
    :raises AzureOpenAIError: the service could not be asked, or the event is malformed.
    """
    if not isinstance(event, dict) or "status" not in event:
        raise AzureOpenAIError(f"Malformed trigger event: {event!r}")
    status = event["status"]
    file = event.get("file")
    if isinstance(file, dict) and expected_file_id is not None and file.get("id") != expected_file_id:
        raise AzureOpenAIError(f"Trigger event is about file {file.get('id')!r}, not {expected_file_id!r}")
    if status == EVENT_SUCCESS and isinstance(file, dict):
        # The trigger judged by the rule with its surface; an event without one (from a trigger of an earlier
        # version) is judged with the most lenient surface's.
        try:
            surface = Surface(event.get("surface", Surface.FOUNDRY.value))
        except ValueError:
            surface = Surface.FOUNDRY
        if file_outcome(file, surface) is not FileOutcome.PROCESSED:
            raise AzureOpenAIError(
                f"Trigger event reports success for a file in status {file.get('status')!r}"
            )
        return file  # type: ignore[return-value]
    if status == EVENT_FAILED and isinstance(file, dict):
        raise AzureOpenAIFileProcessingError(file)
    errors = {EVENT_TIMEOUT: AzureOpenAIWaitTimeoutError, EVENT_ERROR: AzureOpenAIError}
    if status in errors:
        raise errors[status](event.get("message") or f"File {event.get('file_id')}: {status}")
    raise AzureOpenAIError(f"Unknown trigger event: {event!r}")
