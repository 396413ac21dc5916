"""Datasets: what the service accepts in a ``batch`` or ``fine-tune`` JSON Lines file, checked before an
upload (:func:`validate_dataset`, and :func:`scan_dataset` with an md5), batch files split into ones it
accepts (:func:`split_batch_file`), and the uploads' :func:`check_jsonl_start`. The rules themselves live in
:mod:`~airflow_provider_aoai.dataset_rules`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_aoai.dataset_rules import (
    MAX_BATCH_BYTES,
    MAX_BATCH_BYTES_BYOS,
    MAX_BATCH_REQUESTS,
    SLUG_UNSAFE,
    SNIFF_BYTES,
    DatasetProblem,
    DatasetScan,
    Found,
    Problems,
    Reader,
    parse_line,
    request_problems,
    scan_stream,
    shown,
)
from airflow_provider_aoai.exceptions import AzureOpenAIDatasetError, AzureOpenAIInvalidArgumentError
from airflow_provider_aoai.models import ALL_PURPOSES, JSONL_PURPOSES, MAX_FILE_BYTES, MAX_UPLOAD_BYTES
from airflow_provider_aoai.redaction import redact
from airflow_provider_aoai.sources import object_path_fs, open_source, with_connection
from airflow_provider_aoai.validation import check_bool, check_int

if TYPE_CHECKING:
    from airflow_provider_aoai.sources import Source

__all__ = [
    "DatasetProblem",
    "DatasetScan",
    "check_jsonl_start",
    "check_split_limits",
    "scan_dataset",
    "split_batch_file",
    "validate_dataset",
]


def _limits(purpose: Any, max_requests: Any, max_bytes: Any) -> tuple[int, int]:
    if not isinstance(purpose, str) or purpose not in ALL_PURPOSES:
        known = ", ".join(ALL_PURPOSES)
        raise AzureOpenAIInvalidArgumentError("purpose", f"must be one of {known}: {shown(purpose)}")
    if max_requests is not None:
        check_int(max_requests, "max_requests", minimum=1, maximum=MAX_BATCH_REQUESTS)
    if max_bytes is not None:
        check_int(max_bytes, "max_bytes", minimum=1, maximum=MAX_UPLOAD_BYTES)
    size = max_bytes or (MAX_BATCH_BYTES if purpose == "batch" else MAX_FILE_BYTES)
    return max_requests or MAX_BATCH_REQUESTS, size


def scan_dataset(
    source: Source,
    purpose: str,
    *,
    max_requests: int | None = None,
    max_bytes: int | None = None,
    md5: bool = False,
) -> DatasetScan:
    """Read an opened source once, from its start, in chunks: its problems for ``purpose`` (as
    :func:`validate_dataset` tells them), its lines, its bytes and, with ``md5``, the md5 of every byte read.

    :raises AzureOpenAIInvalidArgumentError: a bad argument, named.
    """
    requests, size = _limits(purpose, max_requests, max_bytes)
    with source.open() as stream:
        return scan_stream(stream, purpose, requests, size, check_bool(md5, "md5"), service=False)


def validate_dataset(
    source: Any, purpose: str, *, max_requests: int | None = None, max_bytes: int | None = None
) -> list[DatasetProblem]:
    """Every reason the service would refuse ``source`` for ``purpose``; ``[]`` when it would take it.

    One streaming pass in constant memory (but a batch file's custom_ids, at most ``max_requests`` of them).
    Whole-file problems come first, then at most 100 line problems and a ``more_problems`` counting the rest.
    Codes: Azure's batch error codes where Azure names one, the OpenAI cookbook's for fine-tuning, and ours
    (``invalid_url``, ``invalid_method``, ``invalid_weight``, ``too_few_examples``, ``file_too_large``,
    ``byte_order_mark``: a BOM breaks a batch file, while Azure's fine-tuning docs ask for one).

    :param source: a local path, a ``file://`` or fsspec URL, an ``ObjectStoragePath``, a binary file object.
    :param purpose: ``batch`` or ``fine-tune``; other purposes are not checked.
    :param max_requests: batch only: the most requests in a file, up to (and by default) 100,000.
    :param max_bytes: the largest file: by default 200 MB for batch, 512 MiB for fine-tune.
    :raises AzureOpenAIInvalidArgumentError: a bad ``source``, ``purpose``, ``max_requests`` or ``max_bytes``.
    """
    _limits(purpose, max_requests, max_bytes)
    opened = open_source(source)
    if purpose not in JSONL_PURPOSES:
        return []
    return scan_dataset(opened, purpose, max_requests=max_requests, max_bytes=max_bytes).problems


class _Shards:
    """Where the shards go (a local folder, made when missing; an ``ObjectStoragePath``; an fsspec URL), and
    the open shard of each (deployment, url) group, by first appearance: its name, counts and custom_ids."""

    def __init__(self, destination: Any, stem: str, requests: int, size: int) -> None:
        self.base, self.url, self.stem, self.requests, self.size = destination, "", stem, requests, size
        self.open: dict[tuple[str, str], dict[str, Any]] = {}  # each group's shard, by first appearance
        self.writing = True
        destination = self.base = with_connection(destination, "destination")
        if object_path_fs(destination, "destination") is None:
            url = os.fspath(destination) if isinstance(destination, (str, os.PathLike)) else None
            if not isinstance(url, str) or not url.strip() or "\x00" in url:
                raise AzureOpenAIInvalidArgumentError("destination", "must be a folder or an fsspec URL")
            url = url.removeprefix("file://")
            self.base, self.url = None, url if "://" in url else str(Path(url).expanduser().absolute())
        try:
            import fsspec

            fs, root = (
                (self.base.fs, self.base.path) if self.base is not None else fsspec.core.url_to_fs(self.url)
            )
            self.fs, self.root, self.url = fs, root.rstrip("/"), self.url.rstrip("/")
            if fs.isfile(root):
                raise AzureOpenAIInvalidArgumentError("destination", f"{redact(str(destination))} is a file")
            if {"file", "local"} & set(fs.protocol if isinstance(fs.protocol, tuple) else [fs.protocol]):
                fs.makedirs(root, exist_ok=True)  # object stores have no folders to make
                self.url = self.url and self.root  # a local path, however it was given
        except AzureOpenAIInvalidArgumentError:
            raise
        except Exception as exc:
            why = f"{redact(str(destination))} cannot be used: {type(exc).__name__}: {redact(exc, limit=300)}"
            raise AzureOpenAIInvalidArgumentError("destination", why) from None

    def add(self, record: dict[str, Any], raw: bytes) -> Found:
        """Put a line in its group's shard (the next one when it is full), unless its custom_id is there."""
        key, custom_id = (record["body"]["model"], record["url"]), record["custom_id"]
        if (shard := self.open.get(key)) is None:  # "<model>-<url>", with a hash if another group has it
            digest = hashlib.sha1(json.dumps(key).encode(), usedforsecurity=False).hexdigest()
            model, url = (SLUG_UNSAFE.sub("_", text)[:64] for text in (key[0], key[1].lstrip("/")))
            names = [f"{model}-{url}"] + [f"{model}.{digest[:n]}-{url}" for n in (8, 40)]
            used = {shard["name"].lower() for shard in self.open.values()}  # "GPT" is "gpt" on some systems
            name = next((n for n in names if n.lower() not in used), f"{names[-1]}.{len(used)}")
            shard = self.open[key] = {"name": name, "index": -1, "output": None, "written": []}
        if shard["index"] < 0 or shard["lines"] == self.requests or shard["size"] + len(raw) >= self.size:
            self.close(shard)
            shard.update(index=shard["index"] + 1, lines=0, size=0, ids=set())  # ids alone: no line numbers
            if self.writing:  # the next shard
                shard["written"].append(name := f"{self.stem}-{shard['name']}-{shard['index']:04d}.jsonl")
                shard["output"] = self.fs.open(f"{self.root}/{name}", "wb")
        if custom_id in shard["ids"]:
            return [("duplicate_custom_id", f"custom_id {shown(custom_id)} is already in this shard")]
        shard["ids"].add(custom_id)
        shard["lines"], shard["size"] = shard["lines"] + 1, shard["size"] + len(raw) + 1
        if shard["output"] is not None:
            shard["output"].write(raw + b"\n")
        return []

    def close(self, *shards: dict[str, Any]) -> None:
        for shard in shards or self.open.values():
            output, shard["output"] = shard["output"], None
            if output is not None:
                output.close()

    def discard(self) -> None:
        """Stop writing, and remove every shard written (gone or out of reach: nothing better to do then)."""
        self.close()
        self.writing = False
        for shard in self.open.values():
            for name in shard["written"]:
                with contextlib.suppress(OSError):
                    self.fs.rm(f"{self.root}/{name}")
            shard["written"].clear()

    def uris(self) -> list[str]:
        names = [name for shard in self.open.values() for name in shard["written"]]
        return [f"{self.url}/{name}" if self.base is None else str(self.base / name) for name in names]


def check_split_limits(max_requests: Any, max_bytes: Any) -> tuple[int, int]:
    """``max_requests`` (1 to 100,000) and ``max_bytes`` (1 to 1,000,000,000) of a split, checked.

    :raises AzureOpenAIInvalidArgumentError: naming the argument.
    """
    requests = check_int(max_requests, "max_requests", minimum=1, maximum=MAX_BATCH_REQUESTS)
    return requests, check_int(max_bytes, "max_bytes", minimum=1, maximum=MAX_BATCH_BYTES_BYOS)


def split_batch_file(
    source: Any, destination: Any, *, max_requests: int = MAX_BATCH_REQUESTS, max_bytes: int = MAX_BATCH_BYTES
) -> list[str]:
    """Split a batch file into shards that each are one batch job: one deployment (``body.model``) and url,
    at most ``max_requests`` lines and ``max_bytes`` bytes; one pass, one open shard per group.

    Lines keep their bytes and their order within a group (a last line gets its newline, a leading BOM is
    dropped) in ``<input stem>-<model>-<url>-<NNNN>.jsonl`` (``_`` for a character outside ``[A-Za-z0-9._-]``,
    a short hash after the model when two groups would get one name). The same input gives the same names: a
    re-run (an Airflow retry) overwrites the same shards. Lines are checked as :func:`validate_dataset` does,
    a line over ``max_bytes`` is a ``line_too_large``, and a custom_id must be unique in its shard (one batch
    file to the service; every id of a multi-GB input would not fit the memory bound).

    :param destination: a local folder (made when missing), an ``ObjectStoragePath`` or an fsspec URL.
    :param max_requests: 1 to 100,000 (Azure's limit per batch file).
    :param max_bytes: 1 to 1,000,000,000 (Azure's limit with your own storage).
    :return: local paths, or URIs (an ``ObjectStoragePath``'s carries its connection id: open it again with
        ``ObjectStoragePath(uri)``), by first appearance of their group, then index: for ``.expand()``.
    :raises AzureOpenAIDatasetError: the input has problems (no shard of this call is left behind).
    :raises AzureOpenAIInvalidArgumentError: a bad argument, named.
    :raises OSError: reading or writing failed (no shard of this call is left behind).
    """
    requests, size = check_split_limits(max_requests, max_bytes)
    opened = open_source(source)
    shards = _Shards(destination, SLUG_UNSAFE.sub("_", Path(opened.name).stem)[:64], requests, size)
    problems = Problems()
    try:
        with opened.open() as stream:
            reader = Reader(stream, md5=False, longest=size)
            for first, lines in reader.blocks(text=False):
                if lines is None:
                    problems.add(first, [("line_too_large", f"is longer than max_bytes ({size:,})")])
                for number, raw in enumerate(lines or (), first):
                    record, found = parse_line(raw)
                    if not (found := found or request_problems(record)) and len(raw) >= size:
                        found = [("line_too_large", f"holds {len(raw) + 1:,} bytes, over {size:,}")]
                    problems.add(number, found or shards.add(record, raw))
                if problems and shards.writing:
                    shards.discard()  # the split fails: write no more, go on for the full list of problems
        if not reader.lines:
            problems.add(None, [("empty_file", "the file holds no request; a batch needs at least one")])
        shards.close()
    except BaseException:
        shards.discard()
        raise
    if problems:
        shards.discard()
        raise AzureOpenAIDatasetError("source", problems.result())
    return shards.uris()


def check_jsonl_start(source: Source, purpose: str, argument: str = "source") -> None:
    """For JSON Lines purposes, check that the first line is a JSON object (the service validates the rest).

    :raises AzureOpenAIInvalidArgumentError: the file does not look like JSON Lines.
    """
    if purpose not in JSONL_PURPOSES:
        return
    with source.open() as stream:
        head = stream.read(SNIFF_BYTES)
    first = head.split(b"\n", 1)[0]
    try:
        record = json.loads(first)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        record = None
    if not isinstance(record, dict):
        raise AzureOpenAIInvalidArgumentError(
            argument,
            f"{source.description} is not JSON Lines: purpose {purpose!r} needs one JSON object per line, "
            "and the first line is not one",
        )
