"""Each exclusion rule, the per-participant table, and criteria files."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.exclusions import (
    ExclusionCriteria,
    ParticipantSummary,
    apply_exclusions,
    describe,
    failed_rules,
    load_criteria,
)

GOOD = ParticipantSummary(
    "p", catch_accuracy=1.0, query_choices=(20, 20), instruction_s=60, session_s=900, practice_blocks=1
)


@pytest.mark.parametrize(
    "change, rule",
    [
        ({"catch_accuracy": 0.79}, "catch_accuracy"),
        ({"query_choices": (4, 20)}, "query_rows"),
        ({"query_choices": (20, 0)}, "query_rows"),
        ({"query_choices": (20, 20, 4)}, "query_rows"),  # a paradigm with three queries
        ({"session_status": "expired"}, "incomplete"),
        ({"session_status": "active"}, "incomplete"),  # abandoned: never completed nor expired yet
        ({"session_status": "failed"}, "server_failed"),
        ({"instruction_s": 14.9}, "instruction_time"),
        ({"session_s": 54}, "session_time"),  # 15 s of instructions and 1 s for each of the 40 trials
        ({"session_s": 2501}, "session_time"),
        ({"practice_blocks": 4}, "practice_blocks"),
    ],
)
def test_each_rule_fails_just_past_its_threshold(change, rule):
    assert failed_rules(GOOD) == []
    assert failed_rules(ParticipantSummary(**{**GOOD.__dict__, **change})) == [rule]


def test_thresholds_are_inclusive_and_unknown_values_fail_nothing():
    edge = ParticipantSummary("p", 0.8, (5, 15), 15.0, 35.0, 3)  # 20 trials: 5 per row, 15 + 20 s
    assert failed_rules(edge) == []
    fixed = ExclusionCriteria(min_session_s=135, min_choices_per_query_row=5)  # the 2023 study's numbers
    assert failed_rules(ParticipantSummary("p", 0.8, (5, 5), 15.0, 135.0, 3), fixed) == []
    assert failed_rules(ParticipantSummary("p", 0.8, (4, 5), 15.0, 134.0, 3), fixed) == ["query_rows", "session_time"]
    assert failed_rules(ParticipantSummary("p", None, None, None, None, None)) == []
    assert failed_rules(ParticipantSummary(**{**GOOD.__dict__, "session_status": "completed"})) == []
    keep_all = ExclusionCriteria(exclude_incomplete=False, exclude_server_failed=False)
    for status in ("active", "expired", "failed"):
        assert failed_rules(ParticipantSummary(**{**GOOD.__dict__, "session_status": status}), keep_all) == []
    lenient = ExclusionCriteria(min_catch_accuracy=0.5)
    assert failed_rules(ParticipantSummary(**{**GOOD.__dict__, "catch_accuracy": 0.6}), lenient) == []
    assert describe("session_time") == "took less than 15 s plus 1 s per main trial, or more than 2500 s, in all"
    assert describe("session_time", fixed) == "took less than 135 s or more than 2500 s in all"


def test_default_criteria_scale_with_the_session_so_short_studies_can_pass():
    from contracts.criteria import unmeetable

    # A careful person in the 17-trial odd-one-out study (5 positions), 131 s in all: paid.
    careful = ParticipantSummary("p", 1.0, (4, 3, 3, 4, 3), 40.0, 131.0, 1, trial_s=4.2)
    assert failed_rules(careful) == []
    # A 7-trial 2AFC session can meet the row rule (each row once) and a 2-trial one is not held to it.
    assert failed_rules(ParticipantSummary("p", 1.0, (1, 6), 20.0, 60.0, 1)) == []
    assert failed_rules(ParticipantSummary("p", 1.0, (0, 7), 20.0, 60.0, 1)) == ["query_rows"]
    assert ExclusionCriteria().row_minimum(20, 2) == 5  # the 2023 value, for its 20 trials
    # Faster than the instructions plus 1 s a trial is still too fast.
    assert failed_rules(ParticipantSummary("p", 1.0, (4, 3, 3, 4, 3), 15.0, 31.0, 1)) == ["session_time"]
    assert unmeetable(ExclusionCriteria(), 20, 2) == []
    assert "too few" in unmeetable(ExclusionCriteria(), 3, 2)[0]
    (fixed,) = unmeetable(ExclusionCriteria(min_choices_per_query_row=5), 7, 2)
    assert "no participant can choose each 5 times" in fixed and "leave it empty" in fixed


def test_rules_read_right_for_any_threshold_and_say_when_they_are_off():
    from contracts.criteria import RULES, is_active

    assert describe("query_rows") == (
        "chose one query position less than half as often as an even split of the main trials"
    )
    assert describe("catch_accuracy") == "catch-trial accuracy below 80%"
    one = ExclusionCriteria(min_choices_per_query_row=1, max_practice_blocks=1)
    assert describe("query_rows", one) == "chose one query position fewer than 1 time"
    assert describe("practice_blocks", one) == "needed more than 1 practice block"
    relaxed = ExclusionCriteria(
        min_choices_per_query_row=0, min_instruction_s=0, min_session_s=0, min_trial_s=0, min_catch_accuracy=0
    )
    for rule in ("query_rows", "instruction_time", "trial_time", "catch_accuracy"):
        assert not is_active(rule, relaxed) and describe(rule, relaxed).endswith("off in these criteria")
    assert describe("session_time", relaxed) == "took more than 2500 s in all"
    every_text = " ".join(describe(rule, relaxed) for rule in RULES)
    assert "than 0" not in every_text and "below 0" not in every_text


def test_apply_exclusions_on_a_response_table():
    rows = []
    for participant, catch_correct in (("ok", 1), ("sloppy", 0)):
        for i in range(12):
            rows.append(
                {
                    "participant_id": participant,
                    "trial_kind": "catch" if i < 2 else "main",
                    "correct": catch_correct if i < 2 else 1,
                    "chosen_query": i % 2,
                    "session_s": 600,
                    "instruction_s": 30,
                    "practice_blocks": 1,
                }
            )
        rows.append({"participant_id": participant, "trial_kind": "practice", "correct": 0, "chosen_query": 0})
    kept, table = apply_exclusions(pd.DataFrame(rows))
    assert set(kept["participant_id"]) == {"ok"}
    assert table.set_index("participant_id").loc["sloppy", "failed_rules"] == "catch_accuracy"
    assert table.set_index("participant_id").loc["ok", "query_0_choices"] == 6  # main + catch trials, not practice


def test_criteria_files(tmp_path):
    good = tmp_path / "c.yaml"
    good.write_text("min_catch_accuracy: 0.9\nmax_session_s: 3600\n")
    assert load_criteria(good) == ExclusionCriteria(min_catch_accuracy=0.9, max_session_s=3600)
    bad = tmp_path / "bad.yaml"
    bad.write_text("min_catch_acuracy: 0.9\n")
    from contracts.errors import ConfigError

    with pytest.raises(ConfigError, match=r"bad.yaml: 1 invalid field\(s\)\n  min_catch_acuracy: Extra inputs"):
        load_criteria(bad)
    bad.write_text("min_catch_accuracy: lots\n")
    with pytest.raises(ConfigError, match="min_catch_accuracy"):
        load_criteria(bad)


def test_counterfactual_grid_moves_one_threshold_at_a_time():
    from analysis.exclusions import counterfactual_grid

    rows = []
    for participant, catch_correct in (("ok", 1), ("half", 0.5), ("none", 0)):
        for i in range(10):
            catch = i < 2
            correct = int(i % 2 == 0) if participant == "half" and catch else (catch_correct if catch else 1)
            rows.append(
                {
                    "participant_id": participant,
                    "model_id": "m",
                    "condition": "natural",
                    "trial_kind": "catch" if catch else "main",
                    "correct": int(correct),
                }
            )
    grid = counterfactual_grid(pd.DataFrame(rows), grid={"min_catch_accuracy": (0.0, 0.5, 0.8)})
    kept = grid.set_index("threshold")["n_participants"].to_dict()
    assert kept == {0.0: 3, 0.5: 2, 0.8: 1}
    assert grid.loc[grid["threshold"] == 0.8, "is_default"].item()


def test_an_abandoned_session_and_a_server_failed_one_are_excluded_by_their_own_rules():
    """The audit's case: 20 of 20 wrong, never completed, was kept; so was a session the server failed."""
    rows = []
    for participant, status, correct in (("done", "completed", 1), ("left", "active", 0), ("failed", "failed", 1)):
        for i in range(20):
            rows.append(
                {
                    "participant_id": participant,
                    "trial_kind": "main",
                    "correct": correct,
                    "chosen_query": i % 2,
                    "session_status": status,
                    "session_s": 600,
                    "instruction_s": 30,
                }
            )
    kept, table = apply_exclusions(pd.DataFrame(rows))
    assert set(kept["participant_id"]) == {"done"}
    rules = table.set_index("participant_id")["failed_rules"]
    assert rules["left"] == "incomplete" and rules["failed"] == "server_failed"
    kept, _ = apply_exclusions(pd.DataFrame(rows), ExclusionCriteria(exclude_incomplete=False))
    assert set(kept["participant_id"]) == {"done", "left"}
