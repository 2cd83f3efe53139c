"""Exclusion criteria and their rules (pure): the 2023 study's defaults, except where a fixed number
would fail honest people in a short study (the session minimum and the query-position rule scale with
the session's main trials).

One definition for the server's dashboard and payment lists and for ``psychinterp analyze``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from contracts.errors import load_yaml


class ExclusionCriteria(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_catch_accuracy: float = Field(
        0.8, ge=0, le=1, description="catch-trial accuracy below this fails (the server gives the failed code)"
    )
    min_choices_per_query_row: int | None = Field(
        None,
        ge=0,
        description="each query position (2AFC: the upper and the lower row) chosen this often; empty: half an even "
        "split of the session's main trials, rounded down (5 of 20 2AFC trials, the 2023 value; a rule no "
        "participant of a short study could meet fails honest people)",
    )
    min_instruction_s: float = Field(15.0, ge=0, description="seconds on the instructions, at least")
    min_session_s: float | None = Field(
        None,
        ge=0,
        description="seconds from consent to completion, at least; empty: the instruction minimum plus the "
        "per-trial minimum for each main trial (a fixed minimum fails careful people in short studies) ...",
    )
    max_session_s: float = Field(2500.0, gt=0, description="... and at most")
    min_trial_s: float = Field(
        1.0,
        ge=0,
        description="seconds per main trial on average, on the server's clock, at least (the answer buttons "
        "stay locked for 1.5 s by default, so no person is faster)",
    )
    min_single_trial_s: float = Field(
        1.0,
        ge=0,
        description="seconds each main trial was shown, on the server's clock (from its fetch to its answer, or to "
        "the next trial's fetch if that came first), at least; the server refuses an answer sooner than this "
        "after its trial's fetch (the page waits and sends it again)",
    )
    max_fast_trial_share: float = Field(
        0.1,
        ge=0,
        le=1,
        description="share of a session's main trials allowed below min_single_trial_s (a slow network can make "
        "a trial look short; a script that fetches ahead makes all of them short)",
    )
    max_practice_blocks: int = Field(
        3, ge=1, description="practice blocks allowed (the server ends a session that needs more)"
    )
    exclude_incomplete: bool = Field(True, description="exclude sessions that never completed (abandoned, expired)")
    exclude_server_failed: bool = Field(
        True, description="exclude sessions the server failed (practice or catch trials failed)"
    )

    def row_minimum(self, n_trials: int | None, n_queries: int) -> int:
        """How often each query position must be chosen in a session of ``n_trials`` main trials."""
        if self.min_choices_per_query_row is not None:
            return self.min_choices_per_query_row
        return (n_trials or 0) // (2 * n_queries)

    def session_minimum(self, n_trials: int | None) -> float:
        """The fewest seconds a session of ``n_trials`` main trials may take (0 when the count is unknown)."""
        if self.min_session_s is not None:
            return self.min_session_s
        return self.min_instruction_s + self.min_trial_s * n_trials if n_trials else 0.0


DEFAULT_CRITERIA = ExclusionCriteria()


def unmeetable(criteria: ExclusionCriteria, n_trials: int, n_queries: int) -> list[str]:
    """The criteria a session of ``n_trials`` main trials (catch trials included) cannot meet, or can meet
    only by luck, in words (``build`` warns with them)."""
    problems = []
    row_minimum = criteria.row_minimum(n_trials, n_queries)
    if row_minimum * n_queries > n_trials:
        problems.append(
            f"min_choices_per_query_row is {row_minimum}, but a session has {n_trials} main trials for {n_queries} "
            f"query positions: no participant can choose each {row_minimum} times; leave it empty to derive it"
        )
    elif criteria.min_choices_per_query_row is None and row_minimum == 0:
        problems.append(
            f"the query-position rule is off: {n_trials} main trials are too few for {n_queries} positions "
            f"(it needs at least {2 * n_queries})"
        )
    if criteria.min_session_s is not None and criteria.min_session_s > criteria.max_session_s:
        problems.append(
            f"min_session_s ({criteria.min_session_s:g}) exceeds max_session_s ({criteria.max_session_s:g})"
        )
    return problems


def _times(n: float, unit: str) -> str:
    return f"{n:g} {unit}" if n == 1 else f"{n:g} {unit}s"


@dataclass(frozen=True)
class Rule:
    """One exclusion rule: what it checks, in words that read right for any threshold, and whether it is on."""

    describe: Callable[[ExclusionCriteria], str]
    active: Callable[[ExclusionCriteria], bool] = lambda _criteria: True


RULES: dict[str, Rule] = {
    "catch_accuracy": Rule(
        lambda c: f"catch-trial accuracy below {c.min_catch_accuracy:.0%}", lambda c: c.min_catch_accuracy > 0
    ),
    "query_rows": Rule(
        lambda c: (
            "chose one query position less than half as often as an even split of the main trials"
            if c.min_choices_per_query_row is None
            else f"chose one query position fewer than {_times(c.min_choices_per_query_row, 'time')}"
        ),
        lambda c: c.min_choices_per_query_row != 0,
    ),
    "instruction_time": Rule(
        lambda c: f"read the instructions for less than {c.min_instruction_s:g} s", lambda c: c.min_instruction_s > 0
    ),
    "session_time": Rule(
        lambda c: (
            f"took more than {c.max_session_s:g} s in all"
            if c.min_session_s == 0
            else f"took less than {c.min_instruction_s:g} s plus {c.min_trial_s:g} s per main trial, or more than "
            f"{c.max_session_s:g} s, in all"
            if c.min_session_s is None
            else f"took less than {c.min_session_s:g} s or more than {c.max_session_s:g} s in all"
        )
    ),
    "trial_time": Rule(
        lambda c: f"spent less than {c.min_trial_s:g} s per main trial on average", lambda c: c.min_trial_s > 0
    ),
    "fast_trials": Rule(
        lambda c: (
            f"answered more than {c.max_fast_trial_share:.0%} of the main trials less than "
            f"{c.min_single_trial_s:g} s after they were shown"
        ),
        lambda c: c.min_single_trial_s > 0 and c.max_fast_trial_share < 1,
    ),
    "practice_blocks": Rule(lambda c: f"needed more than {_times(c.max_practice_blocks, 'practice block')}"),
    "incomplete": Rule(lambda c: "did not complete the session (abandoned or expired)", lambda c: c.exclude_incomplete),
    "server_failed": Rule(
        lambda c: "failed by the server (practice, catch trials, or too fast to be real work)",
        lambda c: c.exclude_server_failed,
    ),
    "experimenter": Rule(lambda c: "excluded by the experimenter on the server's dashboard"),
}


@dataclass(frozen=True)
class ParticipantSummary:
    participant_id: str
    catch_accuracy: float | None
    # How often each shown query position was chosen (2AFC: upper, lower); None when the table
    # does not say which query was chosen.
    query_choices: tuple[int, ...] | None
    instruction_s: float | None
    session_s: float | None
    practice_blocks: int | None
    session_id: str | None = None  # when one participant has several sessions (the 2023 release)
    excluded_by_experimenter: bool = False  # a decision on the dashboard, whatever the thresholds
    session_status: str | None = None  # the server's: active, completed, failed, expired (None: not recorded)
    trial_s: float | None = None  # mean seconds per main trial on the server's clock (None: not recorded)
    n_trials: int | None = None  # main trials answered, catch trials included (None: not known)
    # Seconds each answered main trial was shown, on the server's clock (None: not recorded).
    trial_times: tuple[float | None, ...] | None = None

    def fast_share(self, min_single_trial_s: float) -> float | None:
        """The share of timed main trials shown less than ``min_single_trial_s``; None when none is timed."""
        timed = [t for t in self.trial_times or () if t is not None]
        return sum(t < min_single_trial_s for t in timed) / len(timed) if timed else None

    def trials(self) -> int | None:
        """Main trials answered: recorded, or the sum of the query choices."""
        if self.n_trials is not None:
            return self.n_trials
        return sum(self.query_choices) if self.query_choices is not None else None


def failed_rules(summary: ParticipantSummary, criteria: ExclusionCriteria = DEFAULT_CRITERIA) -> list[str]:
    """The rules (keys of :data:`RULES`) this participant fails; unknown values fail no rule."""
    failed = []
    if summary.catch_accuracy is not None and summary.catch_accuracy < criteria.min_catch_accuracy:
        failed.append("catch_accuracy")
    n_trials = summary.trials()
    if summary.query_choices is not None and min(summary.query_choices) < criteria.row_minimum(
        n_trials, len(summary.query_choices)
    ):
        failed.append("query_rows")
    if summary.instruction_s is not None and summary.instruction_s < criteria.min_instruction_s:
        failed.append("instruction_time")
    if (
        summary.session_s is not None
        and not criteria.session_minimum(n_trials) <= summary.session_s <= criteria.max_session_s
    ):
        failed.append("session_time")
    if summary.trial_s is not None and summary.trial_s < criteria.min_trial_s:
        failed.append("trial_time")
    fast = summary.fast_share(criteria.min_single_trial_s)
    if fast is not None and fast > criteria.max_fast_trial_share and criteria.min_single_trial_s > 0:
        failed.append("fast_trials")
    if summary.practice_blocks is not None and summary.practice_blocks > criteria.max_practice_blocks:
        failed.append("practice_blocks")
    if summary.session_status in ("active", "expired") and criteria.exclude_incomplete:
        failed.append("incomplete")
    if summary.session_status == "failed" and criteria.exclude_server_failed:
        failed.append("server_failed")
    if summary.excluded_by_experimenter:
        failed.append("experimenter")
    return failed


# The rules the server itself enforces before it issues a pass code: no code for work too fast to be real.
TIMING_RULES = ("instruction_time", "trial_time", "fast_trials", "session_time")


def too_fast(summary: ParticipantSummary, criteria: ExclusionCriteria = DEFAULT_CRITERIA) -> list[str]:
    """The minimum times this session falls short of (a session that ran too long is not refused)."""
    short = [rule for rule in failed_rules(summary, criteria) if rule in TIMING_RULES]
    if "session_time" in short and summary.session_s > criteria.max_session_s:
        short.remove("session_time")
    return short


def describe(rule: str, criteria: ExclusionCriteria = DEFAULT_CRITERIA) -> str:
    """The rule in words; a rule its threshold switches off says so rather than "fewer than 0 times"."""
    found = RULES[rule]
    if found.active(criteria):
        return found.describe(criteria)
    return f"{rule.replace('_', ' ')}: off in these criteria"


def is_active(rule: str, criteria: ExclusionCriteria = DEFAULT_CRITERIA) -> bool:
    return RULES[rule].active(criteria)


def load_criteria(path: str | Path) -> ExclusionCriteria:
    """Criteria from a YAML file of field: value (unknown fields and bad values are errors)."""
    return load_yaml(path, ExclusionCriteria, "exclusion criteria")
