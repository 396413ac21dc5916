"""Lineage: OpenLineage datasets and facets of the operators, and the extra of their asset events.

Real OpenLineage classes (the provider and the client), real HTTP against the emulator; the listener test
runs Airflow's OpenLineage listener in a DAG run (``dag.test()`` in a subprocess, file transport).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime

import pytest
from airflow.providers.common.compat.sdk import Asset, TaskDeferred

from airflow_provider_aoai.emulator import Emulator
from airflow_provider_aoai.exceptions import AzureOpenAIInvalidArgumentError
from airflow_provider_aoai.lineage import (
    FILE_FACET_KEY,
    FILE_FACET_SCHEMA,
    asset_event_extra,
    resource_namespace,
    source_dataset,
    url_dataset,
)
from airflow_provider_aoai.operators import (
    AzureOpenAIImportFileOperator,
    AzureOpenAIMultipartUploadOperator,
    AzureOpenAIUploadFileOperator,
)
from tests.conftest import API_KEY, CHAT_LINE, REPO, jsonl, set_connection

FAST = {"poll_interval": 0.05, "wait_timeout": 10}
TRAINING_SET = Asset("azure-openai://myres.openai.azure.com/files/fine-tune/training.jsonl")


def to_json(obj) -> str:
    """Serialize with the OpenLineage client's serializer, as the transports do."""
    from openlineage.client.serde import Serde

    return Serde.to_json(obj)


def to_dict(obj) -> dict:
    from openlineage.client.serde import Serde

    return Serde.to_dict(obj)


def outlet_event_accessors():
    """Airflow's own accessors of a task's outlet events (Airflow 3, then 2.x)."""
    try:
        from airflow.sdk.execution_time.context import OutletEventAccessors
    except ImportError:
        from airflow.utils.context import OutletEventAccessors
    return OutletEventAccessors()


def run_trigger(trigger) -> dict:
    async def first():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(first())


# ---------------------------------------------------------------------------------------------- naming
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("/data/train.jsonl", ("file", "/data/train.jsonl")),
        ("file:///data/train.jsonl", ("file", "/data/train.jsonl")),
        ("s3://my-bucket/datasets/train.jsonl", ("s3://my-bucket", "datasets/train.jsonl")),
        ("s3a://my-bucket/train.jsonl", ("s3://my-bucket", "train.jsonl")),
        # ObjectStoragePath puts its conn id in the userinfo: it is not part of the name
        ("s3://aws_default@my-bucket/train.jsonl", ("s3://my-bucket", "train.jsonl")),
        ("gs://my-bucket/train.jsonl", ("gs://my-bucket", "train.jsonl")),
        ("gcs://my-bucket/train.jsonl", ("gs://my-bucket", "train.jsonl")),
        (
            "abfss://data@acct.dfs.core.windows.net/ft/train.jsonl",
            ("abfss://data@acct.dfs.core.windows.net", "ft/train.jsonl"),
        ),
        (
            "abfs://data@acct.dfs.core.windows.net/ft/train.jsonl",
            ("abfss://data@acct.dfs.core.windows.net", "ft/train.jsonl"),
        ),
        ("abfs://data/ft/train.jsonl", ("abfss://data", "ft/train.jsonl")),
        ("az://azure_default@data/ft/train.jsonl", ("abfss://data", "ft/train.jsonl")),
        (
            "wasbs://data@acct.blob.core.windows.net/ft/train.jsonl",
            ("wasbs://data@acct.blob.core.windows.net", "ft/train.jsonl"),
        ),
        (
            "https://acct.blob.core.windows.net/data/train.jsonl?sv=1&sig=abc",
            ("https://acct.blob.core.windows.net", "/data/train.jsonl"),
        ),
        ("memory://datasets/train.jsonl", None),
    ],
)
def test_sources_are_named_by_the_openlineage_naming_spec(source, expected):
    assert source_dataset(source) == expected


def test_a_relative_path_is_named_absolute_and_a_file_object_has_no_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert source_dataset("train.jsonl") == ("file", str(tmp_path / "train.jsonl"))
    with open(tmp_path / "x.jsonl", "wb") as stream:
        assert source_dataset(stream) is None


def test_an_object_storage_path_is_named_like_its_url(tmp_path):
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    path = ObjectStoragePath(f"file://{tmp_path}/a.jsonl")
    assert source_dataset(path) == ("file", f"{tmp_path}/a.jsonl")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://acct.blob.core.windows.net/c/b.jsonl?sv=2024&sig=SECRET",
            ("https://acct.blob.core.windows.net", "/c/b.jsonl"),
        ),
        (
            "http://127.0.0.1:8080/_emulator/blobs/b.jsonl?sig=x#frag",
            ("http://127.0.0.1:8080", "/_emulator/blobs/b.jsonl"),
        ),
        ("https://user:pw@host.example:8443/p", ("https://host.example:8443", "/p")),
        ("https://[::1]:9000/p", ("https://[::1]:9000", "/p")),
    ],
)
def test_import_urls_are_named_without_query_userinfo_or_fragment(url, expected):
    assert url_dataset(url) == expected


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://MyRes.openai.azure.com", "azure-openai://myres.openai.azure.com"),
        ("http://127.0.0.1:8080", "azure-openai://127.0.0.1:8080"),
        (
            "https://hub.services.ai.azure.com/api/projects/agents",
            "azure-openai://hub.services.ai.azure.com/api/projects/agents",
        ),
    ],
)
def test_the_resource_namespace_names_the_endpoint(base_url, expected):
    assert resource_namespace(base_url) == expected


# ---------------------------------------------------------------------------------------------- operators
def facet_dict(dataset) -> dict:
    return to_dict(dataset.facets[FILE_FACET_KEY])


def test_upload_lineage_names_the_source_and_the_new_file(emulator, aoai_conn, chat_file):
    import jsonschema

    operator = AzureOpenAIUploadFileOperator(task_id="up", source=str(chat_file), purpose="fine-tune")
    start = operator.get_openlineage_facets_on_start()
    assert [(d.namespace, d.name) for d in start.inputs] == [("file", str(chat_file))] and not start.outputs

    file = operator.execute({})
    lineage = operator.get_openlineage_facets_on_complete(None)

    assert [(d.namespace, d.name) for d in lineage.inputs] == [("file", str(chat_file))]
    (output,) = lineage.outputs
    assert output.namespace == f"azure-openai://127.0.0.1:{emulator.port}"
    assert output.name == f"files/{file['id']}"
    facet = facet_dict(output)
    jsonschema.validate(facet, FILE_FACET_SCHEMA)
    assert facet["fileId"] == file["id"] and facet["filename"] == "train.jsonl"
    assert facet["bytes"] == chat_file.stat().st_size and facet["purpose"] == "fine-tune"
    assert facet["status"] == file["status"] and "md5" not in facet  # a plain upload computes none
    assert to_dict(output.facets["lifecycleStateChange"])["lifecycleStateChange"] == "CREATE"
    statistics = to_dict(output.outputFacets["outputStatistics"])
    assert statistics["size"] == chat_file.stat().st_size and statistics["fileCount"] == 1


def test_multipart_lineage_carries_the_md5_it_computed(aoai_conn, chat_file):
    import jsonschema

    operator = AzureOpenAIMultipartUploadOperator(
        task_id="mp", source=str(chat_file), purpose="fine-tune", part_size=1024 * 1024
    )
    upload = operator.execute({})
    facet = facet_dict(operator.get_openlineage_facets_on_complete(None).outputs[0])
    jsonschema.validate(facet, FILE_FACET_SCHEMA)
    assert facet["fileId"] == upload["file"]["id"]
    assert facet["md5"] == hashlib.md5(chat_file.read_bytes()).hexdigest()


def test_the_md5_survives_a_deferral_and_the_resumed_run_reports_the_processed_file(aoai_conn, chat_file):
    arguments = dict(
        task_id="mp",
        source=str(chat_file),
        purpose="fine-tune",
        part_size=1024 * 1024,
        wait_for_processing=True,
        deferrable=True,
        outlets=[TRAINING_SET],
        **FAST,
    )
    with pytest.raises(TaskDeferred) as deferred:
        AzureOpenAIMultipartUploadOperator(**arguments).execute({})
    event = run_trigger(deferred.value.trigger)
    # After a deferral a new operator resumes, with the defer kwargs plus the trigger's event.
    resumed = AzureOpenAIMultipartUploadOperator(**arguments)
    context = {"outlet_events": outlet_event_accessors()}
    result = resumed.resume_execution(
        deferred.value.method_name, {**deferred.value.kwargs, "event": event}, context
    )
    assert result["object"] == "upload" and result["file"]["status"] == "processed"
    facet = facet_dict(resumed.get_openlineage_facets_on_complete(None).outputs[0])
    assert facet["md5"] == hashlib.md5(chat_file.read_bytes()).hexdigest()
    assert facet["status"] == "processed"
    # ... and the asset event of the resumed run carries the processed file
    assert context["outlet_events"][TRAINING_SET].extra == {
        "file_id": result["file"]["id"],
        "filename": "train.jsonl",
        "bytes": chat_file.stat().st_size,
        "purpose": "fine-tune",
        "status": "processed",
    }


def test_import_lineage_names_the_url_without_its_query(emulator, aoai_conn):
    url = emulator.put_blob("lineage-import.jsonl", jsonl([CHAT_LINE]))
    operator = AzureOpenAIImportFileOperator(
        task_id="imp", content_url=url, filename="imported.jsonl", purpose="fine-tune"
    )
    file = operator.execute({})
    lineage = operator.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        (emulator.url, "/_emulator/blobs/lineage-import.jsonl")
    ]
    assert lineage.outputs[0].name == f"files/{file['id']}"
    assert facet_dict(lineage.outputs[0])["filename"] == "imported.jsonl"


def test_v1_and_data_plane_share_a_namespace_and_foundry_names_its_project(emulator, monkeypatch, chat_file):
    for name, value in emulator.managed_identity_env().items():
        monkeypatch.setenv(name, value)
    set_connection(monkeypatch, "aoai_dp", host=emulator.url, password=API_KEY)
    set_connection(monkeypatch, "aoai_v1", host=emulator.url, password=API_KEY, extra={"api_version": "v1"})
    set_connection(
        monkeypatch,
        "aoai_project",
        host=emulator.project_url("lineage"),
        extra={"auth_type": "managed_identity"},
    )
    namespaces = {}
    for conn_id, purpose in (
        ("aoai_dp", "fine-tune"),
        ("aoai_v1", "fine-tune"),
        ("aoai_project", "assistants"),
    ):
        operator = AzureOpenAIUploadFileOperator(
            task_id=conn_id, aoai_conn_id=conn_id, source=str(chat_file), purpose=purpose
        )
        file = operator.execute({})
        (output,) = operator.get_openlineage_facets_on_complete(None).outputs
        assert output.name == f"files/{file['id']}"
        namespaces[conn_id] = output.namespace
    assert namespaces["aoai_dp"] == namespaces["aoai_v1"] == f"azure-openai://127.0.0.1:{emulator.port}"
    assert namespaces["aoai_project"] == f"azure-openai://127.0.0.1:{emulator.port}/api/projects/lineage"


def test_a_failed_or_unfinished_run_reports_its_input_only(aoai_conn, tmp_path):
    operator = AzureOpenAIUploadFileOperator(
        task_id="up", source=str(tmp_path / "missing.jsonl"), purpose="fine-tune"
    )
    with pytest.raises(AzureOpenAIInvalidArgumentError):
        operator.execute({})
    lineage = operator.get_openlineage_facets_on_complete(None)
    assert [d.name for d in lineage.inputs] == [str(tmp_path / "missing.jsonl")] and lineage.outputs == []


# ---------------------------------------------------------------------------------------------- asset events
def test_asset_event_extra_holds_the_file():
    file = {
        "object": "file",
        "id": "file-1",
        "filename": "a.jsonl",
        "bytes": 3,
        "purpose": "batch",
        "status": "processed",
        "created_at": 1,
    }
    assert asset_event_extra(file) == {
        "file_id": "file-1",
        "filename": "a.jsonl",
        "bytes": 3,
        "purpose": "batch",
        "status": "processed",
    }


def test_outlets_of_a_completed_deferred_upload_get_the_extra(aoai_conn, chat_file):
    operator = AzureOpenAIUploadFileOperator(
        task_id="up",
        source=str(chat_file),
        purpose="fine-tune",
        wait_for_processing=True,
        deferrable=True,
        outlets=[TRAINING_SET, Asset("azure-openai://myres.openai.azure.com/files/other")],
        **FAST,
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({})
    event = run_trigger(deferred.value.trigger)
    context = {"outlet_events": outlet_event_accessors()}
    file = operator.execute_complete(
        context, event, **{k: v for k, v in deferred.value.kwargs.items() if k == "result"}
    )
    for asset in operator.outlets:
        assert context["outlet_events"][asset].extra["file_id"] == file["id"]
        assert context["outlet_events"][asset].extra["status"] == "processed"


# ---------------------------------------------------------------------------------------------- secrets
SIG_CANARY = "c2lnLWNhbmFyeS0wMTIzNDU2Nzg5"
KEY_CANARY = "api-key-canary-9f8e7d6c5b4a3210"


@pytest.fixture
def canary_emulator(monkeypatch):
    with Emulator(api_key=KEY_CANARY, processing_seconds=0.1) as emu:
        set_connection(monkeypatch, host=emu.url, password=KEY_CANARY, extra={"retry_backoff": 0.01})
        yield emu


def test_no_secret_reaches_any_facet(canary_emulator, chat_file):
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState

    url = canary_emulator.put_blob("canary.jsonl", jsonl([CHAT_LINE]))
    url = url.split("?", 1)[0] + f"?sv=2024-05-04&sr=b&sig={SIG_CANARY}"
    # (userinfo in a content_url is refused before anything is sent: see test_trust.py)
    operators = [
        AzureOpenAIImportFileOperator(
            task_id="imp", content_url=url, filename="c.jsonl", purpose="fine-tune"
        ),
        AzureOpenAIMultipartUploadOperator(
            task_id="mp", source=str(chat_file), purpose="fine-tune", part_size=1 << 20
        ),
    ]
    payloads = []
    for operator in operators:
        payloads.append(to_json(operator.get_openlineage_facets_on_start()))
        result = operator.execute({})
        lineage = operator.get_openlineage_facets_on_complete(None)
        event = RunEvent(
            eventType=RunState.COMPLETE,
            eventTime=datetime.now(UTC).isoformat(),
            run=Run(runId=str(uuid.uuid4())),
            job=Job(namespace="default", name=f"dag.{operator.task_id}"),
            inputs=lineage.inputs,
            outputs=lineage.outputs,
        )
        payloads.append(to_json(event))
        payloads.append(json.dumps(asset_event_extra(result.get("file", result))))
    raw = "\n".join(payloads)
    assert "azure-openai://" in raw and "canary.jsonl" in raw  # the lineage is there ...
    assert SIG_CANARY not in raw and KEY_CANARY not in raw and "sig=" not in raw  # ... its secrets are not


# ---------------------------------------------------------------------------------------------- the listener
PROBE_DAG = """
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_provider_aoai.operators import (
    AzureOpenAIDeleteFileOperator,
    AzureOpenAIImportFileOperator,
    AzureOpenAIMultipartUploadOperator,
)

with DAG("lineage_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
    AzureOpenAIImportFileOperator(
        task_id="import_file", content_url={url!r}, filename="probe.jsonl", purpose="fine-tune"
    )
    upload = AzureOpenAIMultipartUploadOperator(
        task_id="upload", source={source!r}, purpose="fine-tune", part_size=1 << 20
    )
    delete = AzureOpenAIDeleteFileOperator(
        task_id="delete", file_id="{{{{ ti.xcom_pull(task_ids='upload')['file']['id'] }}}}"
    )
    upload >> delete
"""


def test_airflows_openlineage_listener_emits_our_lineage(canary_emulator, chat_file, tmp_path):
    """A DAG run with the OpenLineage provider enabled (file transport) emits our datasets, and no secret."""
    dags = tmp_path / "dags"
    dags.mkdir()
    url = canary_emulator.put_blob("probe.jsonl", jsonl([CHAT_LINE])).split("?")[0] + f"?sig={SIG_CANARY}"
    (dags / "lineage_probe.py").write_text(PROBE_DAG.format(url=url, source=str(chat_file)))
    events_file = tmp_path / "openlineage.jsonl"
    home = tmp_path / "airflow-home"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "PYTHONPATH": str(REPO),
    }
    code = textwrap.dedent(
        f"""
        import importlib.util
        from airflow.utils.db import initdb
        initdb()
        spec = importlib.util.spec_from_file_location("lineage_probe", {str(dags / "lineage_probe.py")!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print("RUN STATE", module.dag.test().state)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=400
    )
    assert "RUN STATE success" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]

    raw = events_file.read_text()
    events = [json.loads(line) for line in raw.splitlines()]
    complete = {e["job"]["name"]: e for e in events if e["eventType"] == "COMPLETE"}
    namespace = f"azure-openai://127.0.0.1:{canary_emulator.port}"

    imported = complete["lineage_probe.import_file"]
    assert [(d["namespace"], d["name"]) for d in imported["inputs"]] == [
        (canary_emulator.url, "/_emulator/blobs/probe.jsonl")
    ]
    (imported_file,) = imported["outputs"]
    assert imported_file["namespace"] == namespace and imported_file["name"].startswith("files/file-")

    uploaded = complete["lineage_probe.upload"]
    assert [(d["namespace"], d["name"]) for d in uploaded["inputs"]] == [("file", str(chat_file))]
    (uploaded_file,) = uploaded["outputs"]
    facet = uploaded_file["facets"][FILE_FACET_KEY]
    assert facet["md5"] == hashlib.md5(chat_file.read_bytes()).hexdigest()
    assert facet["bytes"] == chat_file.stat().st_size and facet["purpose"] == "fine-tune"

    (deleted,) = complete["lineage_probe.delete"]["outputs"]
    assert deleted["name"] == uploaded_file["name"] and deleted["namespace"] == namespace
    assert deleted["facets"]["lifecycleStateChange"]["lifecycleStateChange"] == "DROP"

    assert SIG_CANARY not in raw and KEY_CANARY not in raw and "sig=" not in raw
