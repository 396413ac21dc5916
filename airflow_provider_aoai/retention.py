"""Retention: which files a prune deletes (the rule, without I/O) and the prune itself (:class:`Retention`).

``prune_files`` (hook) and ``AzureOpenAIPruneFilesOperator`` ask :func:`select_files_to_prune`. The rule:
the candidates are the files with the given ``purpose`` (and filename prefix) that are not being deleted;
the ``keep_latest`` newest candidates stay whatever their age; of the rest, every file created strictly
before ``now - older_than`` goes, oldest first. Ties in ``created_at`` (whole seconds) are broken by id, so
a retry picks the same files. A file without ``created_at`` is never pruned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_aoai.exceptions import AzureOpenAIInvalidArgumentError, AzureOpenAINotFoundError
from airflow_provider_aoai.models import ALL_PURPOSES, File, FileStatus
from airflow_provider_aoai.validation import check_bool, check_choice, check_id, check_text

if TYPE_CHECKING:
    from airflow_provider_aoai.resources.files import Files

MAX_AGE = timedelta(days=36500)
_GONE = frozenset({FileStatus.DELETING.value, FileStatus.DELETED.value})


@dataclass(frozen=True)
class PruneRule:
    """Checked prune arguments (see the module docstring)."""

    purpose: str
    older_than: timedelta
    filename_prefix: str | None
    keep_latest: int
    now: datetime

    @property
    def cutoff(self) -> float:
        return (self.now - self.older_than).timestamp()

    def describe(self) -> str:
        named = f" named {self.filename_prefix}*" if self.filename_prefix is not None else ""
        cutoff = datetime.fromtimestamp(self.cutoff, UTC).isoformat()
        return (
            f"purpose {self.purpose!r}{named}, keeping the newest {self.keep_latest}, created before {cutoff}"
        )


def prune_rule(
    *, purpose: Any, older_than: Any, filename_prefix: Any = None, keep_latest: Any = 0, now: Any = None
) -> PruneRule:
    """Check the prune arguments (``purpose`` and ``older_than`` are required, so nothing goes by accident).

    :raises AzureOpenAIInvalidArgumentError: naming the argument.
    """
    check_choice(purpose, "purpose", ALL_PURPOSES)
    check_prune_limits(older_than=older_than, keep_latest=keep_latest)
    if filename_prefix is not None:
        check_text(filename_prefix, "filename_prefix")
    if now is None:
        now = datetime.now(UTC)
    elif not isinstance(now, datetime) or now.tzinfo is None:
        raise AzureOpenAIInvalidArgumentError("now", f"must be a timezone-aware datetime; got {now!r}")
    return PruneRule(purpose, older_than, filename_prefix, keep_latest, now)


def check_prune_limits(*, older_than: Any, keep_latest: Any) -> None:
    """``older_than`` a timedelta from 0 to 100 years, ``keep_latest`` an integer, 0 or more."""
    if not isinstance(older_than, timedelta):
        raise AzureOpenAIInvalidArgumentError(
            "older_than", f"required, a datetime.timedelta such as timedelta(days=30); got {older_than!r}"
        )
    if not timedelta(0) <= older_than <= MAX_AGE:
        raise AzureOpenAIInvalidArgumentError(
            "older_than", f"must be from 0 to {MAX_AGE.days} days; got {older_than}"
        )
    if isinstance(keep_latest, bool) or not isinstance(keep_latest, int) or keep_latest < 0:
        raise AzureOpenAIInvalidArgumentError(
            "keep_latest", f"must be an integer, 0 or more; got {keep_latest!r}"
        )


def select_files_to_prune(files: list[File], rule: PruneRule) -> tuple[list[File], list[File]]:
    """``(candidates, doomed)``: the files the rule considers, and those it deletes (oldest first)."""
    candidates = [
        file
        for file in files
        if file.get("purpose") == rule.purpose
        and file.get("status") not in _GONE
        and (rule.filename_prefix is None or str(file.get("filename") or "").startswith(rule.filename_prefix))
        and isinstance(file.get("created_at"), (int, float))
        and not isinstance(file.get("created_at"), bool)
    ]
    candidates.sort(key=lambda f: (f["created_at"], str(f.get("id"))), reverse=True)
    doomed = [f for f in candidates[rule.keep_latest :] if f["created_at"] < rule.cutoff]
    doomed.reverse()
    return candidates, doomed


class Retention:
    """Prunes the files of one connection by a :class:`PruneRule`."""

    def __init__(self, files: Files) -> None:
        self.files = files

    def prune_files(
        self,
        *,
        purpose: str,
        older_than: Any,
        filename_prefix: str | None = None,
        keep_latest: int = 0,
        dry_run: bool = False,
        now: Any = None,
    ) -> list[str]:
        """Delete the files of one purpose that are older than ``older_than``, keeping the newest ones.

        A file that is gone by the time it is deleted (another run, a retry) is skipped, not an error, so a
        prune is safe to retry.

        :param purpose: required, so that one call never spans purposes (e.g. ``fine-tune``).
        :param older_than: required ``datetime.timedelta``, zero or more (``timedelta(days=30)``).
        :param filename_prefix: only files whose name starts with it.
        :param keep_latest: how many of the newest candidates to keep, 0 or more.
        :param dry_run: list what would be deleted and delete nothing.
        :param now: the time ages are measured from (timezone-aware); defaults to the current time.
        :returns: the ids deleted (with ``dry_run``, those that would be), oldest first.
        :raises AzureOpenAIInvalidArgumentError: a missing or bad argument; nothing is sent.
        """
        rule = prune_rule(
            purpose=purpose,
            older_than=older_than,
            filename_prefix=filename_prefix,
            keep_latest=keep_latest,
            now=now,
        )
        check_bool(dry_run, "dry_run")
        log = self.files.log
        candidates, doomed = select_files_to_prune(self.files.list_files(purpose=rule.purpose), rule)
        log.info(
            "%d candidate file(s) for %s: %d %s",
            len(candidates),
            rule.describe(),
            len(doomed),
            "would be deleted (dry run)" if dry_run else "to delete",
        )
        deleted: list[str] = []
        for file in doomed:
            file_id = check_id(file.get("id"), "id")
            if not dry_run:
                try:
                    gone = self.files.delete_file(file_id=file_id).get("deleted") is not True
                except AzureOpenAINotFoundError:
                    gone = True
                if gone:  # deleted meanwhile (a 404, or a file- id's "deleted": false)
                    log.info("File %s is already gone", file_id)
                    continue
            log.info(
                "%s %s (%s, created at %s)",
                "Would delete" if dry_run else "Deleted",
                file_id,
                file.get("filename"),
                file["created_at"],
            )
            deleted.append(file_id)
        return deleted
