"""From a number to a verdict: thresholds, grading and the :class:`CheckResult` of each shape.

``warn``/``fail`` are levels a value must not exceed. Row checks grade the failing fraction (with
``mostly`` as ``fail = 1 - mostly``), count checks the failing count, age checks minutes; with no
level at all any failing row fails.
"""

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from healthmon_dagster.config.models import CheckSpec
from healthmon_dagster.enums import QualityStatus
from healthmon_dagster.quality.context import EvalContext
from healthmon_dagster.quality.result import CheckResult


class CheckIdentity(Protocol):
    """What a result needs of its check: a spec, or the generated last-load check."""

    @property
    def check_name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def blocking(self) -> bool: ...


def fraction_thresholds(spec: CheckSpec) -> tuple[float | None, float | None]:
    """(warn, fail) as failing fractions; ``mostly`` is ``fail = 1 - mostly``; no threshold at
    all means any failing row fails."""
    mostly: float | None = getattr(spec, "mostly", None)
    if spec.fail is not None:
        fail: float | None = spec.fail
    elif mostly is not None:
        fail = round(1.0 - mostly, 12)
    else:
        fail = 0.0 if spec.warn is None else None
    return spec.warn, fail


def count_thresholds(spec: CheckSpec) -> tuple[float | None, float | None]:
    """(warn, fail) as counts; no threshold at all means any failing row fails."""
    fail = spec.fail if spec.fail is not None else (0.0 if spec.warn is None else None)
    return spec.warn, fail


def grade(value: float, warn: float | None, fail: float | None) -> QualityStatus:
    """FAILED above ``fail``, WARN above ``warn``, else PASSED."""
    if fail is not None and value > fail:
        return QualityStatus.FAILED
    if warn is not None and value > warn:
        return QualityStatus.WARN
    return QualityStatus.PASSED


def rate(n: int, total: int) -> float:
    return n / total if total else 0.0


def make_result(
    ctx: EvalContext, spec: CheckIdentity, status: QualityStatus, message: str, **kw: Any
) -> CheckResult:
    """A result of ``spec`` on the context's asset; ``details`` drops None values."""
    details = {k: float(v) for k, v in kw.pop("details", {}).items() if v is not None}
    return CheckResult(
        check_name=spec.check_name,
        asset=ctx.asset,
        kind=spec.kind,
        status=status,
        message=message,
        details=details,
        blocking=spec.blocking,
        **kw,
    )


def fraction_result(
    ctx: EvalContext,
    spec: CheckSpec,
    failing: int,
    total: int,
    what: str,
    details: Mapping[str, float],
) -> CheckResult:
    """``failing`` of ``total`` rows ``what``, graded as a fraction."""
    warn, fail = fraction_thresholds(spec)
    fraction = rate(failing, total)
    status = grade(fraction, warn, fail)
    limit = fail if status == QualityStatus.FAILED or warn is None else warn
    message = f"{failing} of {total} rows ({fraction:.2%}) of the {ctx.scope_name} {what}" + (
        f"; allowed: {limit:.2%}" if limit is not None else ""
    )
    return make_result(
        ctx,
        spec,
        status,
        message,
        observed_value=fraction,
        threshold=fail if fail is not None else warn,
        failing_rows=failing,
        total_rows=total,
        details={
            "failing_rows": failing,
            "total_rows": total,
            "failing_fraction": fraction,
            **({"warn_threshold": warn} if warn is not None else {}),
            **({"fail_threshold": fail} if fail is not None else {}),
            **details,
        },
    )


def count_result(
    ctx: EvalContext,
    spec: CheckSpec,
    failing: int,
    what: str,
    details: Mapping[str, float],
    total: int | None = None,
) -> CheckResult:
    """``failing`` ``what`` (problems, rows), graded as a count."""
    warn, fail = count_thresholds(spec)
    status = grade(failing, warn, fail)
    limit = fail if status == QualityStatus.FAILED or warn is None else warn
    message = f"{failing} {what}" + (f"; allowed: {limit:g}" if limit is not None else "")
    return make_result(
        ctx,
        spec,
        status,
        message,
        observed_value=float(failing),
        threshold=fail if fail is not None else warn,
        failing_rows=failing,
        total_rows=total,
        details={
            "failing_rows": failing,
            **({"total_rows": total} if total is not None else {}),
            **({"warn_threshold": warn} if warn is not None else {}),
            **({"fail_threshold": fail} if fail is not None else {}),
            **details,
        },
    )


def age_result(
    ctx: EvalContext,
    spec: CheckIdentity,
    newest: datetime | None,
    warn_min: float | None,
    fail_min: float,
    what: str,
) -> CheckResult:
    """The age of ``newest`` in minutes against the warn/fail minutes; FAILED when there is none."""
    if newest is None:
        return make_result(
            ctx,
            spec,
            QualityStatus.FAILED,
            f"no {what} found: the asset has never been loaded",
            threshold=float(fail_min),
            details={"fail_after_minutes": fail_min},
        )
    age = max((ctx.now - newest).total_seconds() / 60, 0.0)
    if age > fail_min:
        status = QualityStatus.FAILED
    elif warn_min is not None and age > warn_min:
        status = QualityStatus.WARN
    else:
        status = QualityStatus.PASSED
    return make_result(
        ctx,
        spec,
        status,
        f"{what} is {age:.0f} minutes old; warn after {warn_min or '-'}, fail after {fail_min}",
        observed_value=age,
        threshold=float(fail_min),
        details={
            "age_minutes": age,
            "fail_after_minutes": fail_min,
            **({"warn_after_minutes": warn_min} if warn_min is not None else {}),
        },
    )


def learning_result(
    ctx: EvalContext,
    spec: CheckIdentity,
    n_history: int,
    min_history: int,
    needed: int,
    what: str,
    **kw: Any,
) -> CheckResult:
    """A check that lacks the history to judge: status INSUFFICIENT_HISTORY, which passes, with
    ``n_history``/``min_history``/``loads_needed`` in details and in the message."""
    needed = max(needed, 1)
    details = {
        "n_history": n_history,
        "min_history": min_history,
        "loads_needed": needed,
        **kw.pop("details", {}),
    }
    return make_result(
        ctx,
        spec,
        QualityStatus.INSUFFICIENT_HISTORY,
        f"learning: {n_history} of {min_history} training observation(s) for {what}; needs "
        f"{needed} more load{'s' if needed != 1 else ''} before it judges (passes until then)",
        details=details,
        **kw,
    )


def error_result(asset: str, spec: CheckIdentity, message: str, ms: float = 0.0) -> CheckResult:
    """The result of a check that could not be evaluated: status ERROR, never a pass."""
    return CheckResult(
        check_name=spec.check_name,
        asset=asset,
        kind=spec.kind,
        status=QualityStatus.ERROR,
        message=f"check could not be evaluated: {message}",
        blocking=spec.blocking,
        duration_ms=ms,
    )
