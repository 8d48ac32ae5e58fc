"""One exception family for llmrec: every error says what, where and how to fix."""

from __future__ import annotations

from pathlib import Path


class LlmrecError(Exception):
    """Base class of every error llmrec raises on purpose."""

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        parts = [self.what]
        if self.where:
            parts.append(f"  where: {self.where}")
        if self.fix:
            parts.append(f"  fix:   {self.fix}")
        return "\n".join(parts)


class ConfigError(LlmrecError):
    """A parameter or configuration value is wrong."""


class DataError(LlmrecError):
    """Input data cannot be read or breaks the data contract."""

    @classmethod
    def at(
        cls,
        what: str,
        path: str | Path,
        *,
        line: int | None = None,
        column: str | None = None,
        fix: str | None = None,
    ) -> "DataError":
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column!r}"
        return cls(what, where=where, fix=fix)


class ValidationFailed(DataError):
    """Great Expectations found errors: the pipeline stops before training."""

    def __init__(self, what: str, *, summary: str, report_path: str | None = None) -> None:
        self.summary = summary
        self.report_path = report_path
        self._what = what
        super().__init__(
            f"{what}\n{summary}",
            where=report_path,
            fix="fix the rows listed above in the source files, then run again",
        )


    def __reduce__(self):  # picklable, so orchestrators can persist and ship the failure
        return (_rebuild_validation_failed, (self._what, self.summary, self.report_path))


def _rebuild_validation_failed(what: str, summary: str, report_path: str | None) -> ValidationFailed:
    return ValidationFailed(what, summary=summary, report_path=report_path)


class ModelError(LlmrecError):
    """A model or backbone cannot be loaded or used."""


class TrackingError(LlmrecError):
    """The MLflow store or registry refused an operation."""


class VersioningError(LlmrecError):
    """git or DVC refused an operation."""


class PromotionAlert(LlmrecError):
    """The policy kept the champion although the data says it should be replaced (or nothing is served).

    Raised at the end of a retrain run, after everything was recorded, so the run ends failed
    (a failed Prefect state, a non-zero exit code) instead of passing silently. `summary` is the
    run's result (what the flow would have returned).
    """

    def __init__(self, what: str, *, summary: dict | None = None) -> None:
        self.summary = summary or {}
        super().__init__(what, fix="read the decision record (outputs/decision.json, the MLflow run) and the drift report")

    def __reduce__(self):  # picklable, so orchestrators can persist and ship the failure
        return (_rebuild_promotion_alert, (self.what, self.summary))


def _rebuild_promotion_alert(what: str, summary: dict) -> PromotionAlert:
    return PromotionAlert(what, summary=summary)
