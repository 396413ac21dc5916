"""AzureOpenAIFileStatusSensor: poke results, failures, deferral and its resume path."""

from __future__ import annotations

import pytest

from airflow_provider_aoai.exceptions import AzureOpenAIFileProcessingError
from airflow_provider_aoai.models import FileStatus
from airflow_provider_aoai.sensors import AzureOpenAIFileStatusSensor


def sensor(file_id, **kwargs):
    return AzureOpenAIFileStatusSensor(task_id="wait", file_id=file_id, poke_interval=0.05, **kwargs)


def test_poke_is_false_until_processed_then_returns_the_file(hook, emulator, chat_file):
    file = hook.upload_file(source=chat_file, purpose="fine-tune")
    emulator.store.force_statuses(file["id"], ["pending", "running", "processed"])
    task = sensor(file["id"])
    assert task.poke({}) is False
    assert task.poke({}) is False
    done = task.poke({})
    assert done.is_done and done.xcom_value["id"] == file["id"] and done.xcom_value["status"] == "processed"


@pytest.mark.parametrize("status", [s for s in FileStatus if s.is_failure])
def test_failed_statuses_fail_the_sensor(hook, emulator, chat_file, status):
    file = hook.upload_file(source=chat_file, purpose="fine-tune")
    emulator.store.force_statuses(file["id"], [status.value], "Line 3: expected a 'messages' list")
    with pytest.raises(AzureOpenAIFileProcessingError) as caught:
        sensor(file["id"]).poke({})
    assert caught.value.status == status.value
    if status is FileStatus.ERROR:
        assert "Line 3" in str(caught.value)


def test_deferrable_sensor_defers_with_its_settings(hook, emulator, chat_file):
    from airflow.providers.common.compat.sdk import TaskDeferred

    file = hook.upload_file(source=chat_file, purpose="fine-tune")
    emulator.store.force_statuses(file["id"], ["running"])
    task = sensor(file["id"], deferrable=True, timeout=60)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute({})
    trigger = deferred.value.trigger
    assert (trigger.file_id, trigger.poll_interval, deferred.value.method_name) == (
        file["id"],
        0.05,
        "execute_complete",
    )
    processed = {"status": "success", "file_id": file["id"], "file": {**file, "status": "processed"}}
    assert task.execute_complete({}, processed)["status"] == "processed"
    with pytest.raises(AzureOpenAIFileProcessingError):
        task.execute_complete(
            {}, {"status": "failed", "file_id": file["id"], "file": {**file, "status": "error"}}
        )


def test_a_processed_file_needs_no_deferral(hook, chat_file):
    file = hook.upload_file(source=chat_file, purpose="fine-tune")
    hook.wait_for_file(file_id=file["id"], poll_interval=0.05, timeout=10)
    assert sensor(file["id"], deferrable=True).execute({})["status"] == "processed"


def test_deferrable_defaults_to_the_operators_config(monkeypatch):
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    assert sensor("f").deferrable is True
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "False")
    assert sensor("f").deferrable is False
    assert "file_id" in AzureOpenAIFileStatusSensor.template_fields


@pytest.mark.parametrize("status", list(FileStatus))
def test_status_rules(status):
    assert status.is_terminal == (status in (FileStatus.PROCESSED, FileStatus.ERROR, FileStatus.DELETED))
    assert status.is_failure == (status in (FileStatus.ERROR, FileStatus.DELETED))
    assert FileStatus.of({"status": status.value}) is status


def test_unknown_and_missing_statuses():
    assert not FileStatus.of({"status": "validating"}).is_terminal  # a future state: keep waiting
    # Foundry's FileInfo may omit the status: stored means ready. Elsewhere a missing status is unknown.
    assert FileStatus.of({"id": "foundry-file"}, status_optional=True) is FileStatus.PROCESSED
    assert not FileStatus.of({"id": "file-1"}).is_terminal
    assert not FileStatus.of({"id": "file-1", "status": None}).is_terminal
