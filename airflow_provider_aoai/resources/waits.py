"""Waiting for a file to be processed, in the worker: poll its status until the rule says it is done.

The rule itself (:func:`~airflow_provider_aoai.models.file_outcome`) is the one the sensor and the trigger
use; in the triggerer the wait is :class:`~airflow_provider_aoai.triggers.AzureOpenAIFileStatusTrigger`.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from airflow_provider_aoai.exceptions import AzureOpenAIStoppedError, AzureOpenAIWaitTimeoutError
from airflow_provider_aoai.options import DEFAULT_POLL_INTERVAL, DEFAULT_WAIT_TIMEOUT, WaitOptions
from airflow_provider_aoai.validation import check_id, check_stop

if TYPE_CHECKING:
    from airflow_provider_aoai.models import File
    from airflow_provider_aoai.resources.files import Files


class Waits:
    """Blocking waits for the files of one connection."""

    def __init__(self, files: Files) -> None:
        self.files = files

    def wait_for_file(
        self,
        *,
        file_id: str,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        stop: threading.Event | None = None,
    ) -> File:
        """Poll until the file is ``processed`` and return it.

        :param stop: set it to stop waiting at once (the task is being killed).
        :raises AzureOpenAIFileProcessingError: the file ended in ``error`` (with ``status_details``) or
            ``deleted``.
        :raises AzureOpenAIWaitTimeoutError: still not terminal after ``timeout`` seconds.
        """
        check_id(file_id, "file_id")
        return self.wait(file_id, WaitOptions.checked(poll_interval, timeout), check_stop(stop))

    def wait(self, file_id: str, options: WaitOptions, stop: threading.Event | None = None) -> File:
        """:meth:`wait_for_file` with arguments already checked."""
        deadline = time.monotonic() + options.timeout
        while True:
            file = self.files.get_file(file_id=file_id)
            if self.files.settled(file):
                return file
            status = self.files.status_of(file)
            if time.monotonic() + options.poll_interval > deadline:
                raise AzureOpenAIWaitTimeoutError(
                    f"File {file_id} is still {status.value!r} after {options.timeout:.0f}s"
                )
            self.files.log.info(
                "File %s is %s; checking again in %ss", file_id, status.value, options.poll_interval
            )
            if stop is not None:
                if stop.wait(options.poll_interval):
                    raise AzureOpenAIStoppedError(
                        f"Stopped waiting for file {file_id}: the task is being killed"
                    )
            else:
                time.sleep(options.poll_interval)
