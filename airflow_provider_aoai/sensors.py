"""AzureOpenAIFileStatusSensor: waits until a file is ``processed`` (poke, reschedule or deferrable)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_aoai.config import default_deferrable
from airflow_provider_aoai.validation import MIN_POLL_SECONDS, check_bool, check_seconds

if TYPE_CHECKING:
    from airflow_provider_aoai.hooks import AzureOpenAIHook
    from airflow_provider_aoai.models import File


class AzureOpenAIFileStatusSensor(BaseSensorOperator):
    """Wait for a file to be ``processed`` and return the File (to XCom).

    Fails, without retrying, when the file ends in ``error`` (the message carries the service's
    ``status_details``) or ``deleted``. Works in ``poke`` and ``reschedule`` modes and, with
    ``deferrable=True``, frees the worker slot and waits in the triggerer.

    :param file_id: the file to watch (templated; checked before the first request).
    :param aoai_conn_id: the ``aoai`` connection (templated).
    :param deferrable: wait in the triggerer; defaults to ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = ("file_id", "aoai_conn_id")
    ui_color = "#e6f1ff"

    def __init__(
        self,
        *,
        file_id: str,
        aoai_conn_id: str = "aoai_default",
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.file_id = file_id
        self.aoai_conn_id = aoai_conn_id
        self.deferrable = default_deferrable() if deferrable is None else check_bool(deferrable, "deferrable")
        poke = (
            self.poke_interval.total_seconds()
            if hasattr(self.poke_interval, "total_seconds")
            else self.poke_interval
        )
        check_seconds(poke, "poke_interval", minimum=MIN_POLL_SECONDS, allow_zero=True)
        timeout = self.timeout.total_seconds() if hasattr(self.timeout, "total_seconds") else self.timeout
        if not (isinstance(timeout, (int, float)) and math.isinf(timeout)):
            check_seconds(timeout, "timeout")

    @cached_property
    def hook(self) -> AzureOpenAIHook:
        from airflow_provider_aoai.hooks import AzureOpenAIHook

        return AzureOpenAIHook(aoai_conn_id=self.aoai_conn_id)

    def poke(self, context: Any) -> PokeReturnValue | bool:
        files = self.hook.files
        file = files.get_file(file_id=self.file_id)  # checks the id before its request
        if files.settled(file):  # raises AzureOpenAIFileProcessingError for error / deleted
            return PokeReturnValue(is_done=True, xcom_value=file)
        self.log.info("File %s is %s", self.file_id, files.status_of(file).value)
        return False

    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            return super().execute(context)
        done = self.poke(context)  # no need to defer a file that is already processed
        if isinstance(done, PokeReturnValue):
            return done.xcom_value
        from airflow_provider_aoai.triggers import AzureOpenAIFileStatusTrigger

        self.defer(
            trigger=AzureOpenAIFileStatusTrigger(
                file_id=self.file_id,
                aoai_conn_id=self.aoai_conn_id,
                poll_interval=float(self.poke_interval),
                end_time=time.time() + float(self.timeout),
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> File:
        """Resume after the trigger fired: return the processed File or raise what the event reports."""
        from airflow_provider_aoai.triggers import file_from_event

        file = file_from_event(event, expected_file_id=self.file_id)
        self.log.info("File %s is %s", file.get("id"), file.get("status"))
        return file
