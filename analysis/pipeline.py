"""The analysis as a pipeline: a response table in, a results object out (nothing is written here).

:func:`analyse` reads a table (ours, the 2023 release's, Borowski et al.'s), applies the
exclusions, and computes every estimate the report shows. :mod:`analysis.report` renders the
results it returns: tables as CSV, figures, and the HTML page.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.breakdown import breakdowns, participant_means, rating_summary, repeat_agreement
from analysis.config import DEFAULT_ANALYSIS, AnalysisConfig
from analysis.estimate import (
    accuracy_table,
    against_chance,
    chance_level,
    depth_correlation,
    depth_trend,
    main_trials,
    model_comparison,
    models_differ,
)
from analysis.estimate import unit_accuracy as unit_accuracy_table
from analysis.exclusions import (
    ExclusionCriteria,
    apply_exclusions,
    counterfactual_grid,
    published_exclusions,
)
from analysis.formats import FORMATS
from analysis.load import ResponseTableError, as_responses, check_machine_scores, load_machine_scores, load_table
from analysis.machine import (
    human_and_machine_models,
    human_and_machine_units,
    human_machine_correlation,
    noise_ceiling,
)
from analysis.paradigms import paired_unit_accuracy, paradigm_correlation
from analysis.ppi import PPIResults, ppi_estimates
from analysis.scaling import (
    PREDICTORS,
    condition_interaction,
    robustness_checks,
    scaling_trends,
    scaling_warnings,
    with_model_facts,
)
from analysis.unit_kinds import kind_accuracy, kind_differences, unit_kinds
from contracts.bundle import Manifest

EXCLUSION_MODES = ("ours", "published", "none")


@dataclass(frozen=True)
class Exclusions:
    mode: str  # one of EXCLUSION_MODES
    criteria: ExclusionCriteria
    table: pd.DataFrame  # one row per participant or session: values checked, rules failed, excluded
    note: str = ""  # what the source's own exclusions mean (published mode)
    thresholds: pd.DataFrame | None = None  # accuracy if one criterion moved (ours mode)


@dataclass(frozen=True)
class ModelComparison:
    condition: str
    kruskal_H: float
    kruskal_p: float
    conover_holm_p: pd.DataFrame  # model x model


@dataclass(frozen=True)
class Scaling:
    facts: pd.DataFrame  # responses with the models' facts (log10 parameters, ...)
    trends: pd.DataFrame  # one row per condition x predictor, with its corrected claims
    robustness: pd.DataFrame
    interaction: pd.DataFrame  # condition x scale: the slope of each pair's difference
    warnings: list[str]  # collinear predictors, slopes resting on one or two models
    config: AnalysisConfig


@dataclass(frozen=True)
class MachineComparison:
    observer: str
    source: Path
    units: pd.DataFrame  # human accuracy and machine score per unit
    models: pd.DataFrame
    correlation: pd.DataFrame
    ceiling: pd.DataFrame  # per condition: machine-human r beside the split-half noise ceiling
    ppi: PPIResults  # human-only and prediction-powered intervals per model, and slopes
    calibration: str | None = None  # the observer's temperature and lapse, when the file records them


@dataclass(frozen=True)
class UnitKinds:
    kinds: list[str]  # the reference kind first
    accuracy: pd.DataFrame  # per model x condition x kind, with the crossed interval
    differences: pd.DataFrame  # per model x condition x other kind: the difference, its CI, tests and verdict
    margin: float  # the equivalence margin of the differences


@dataclass(frozen=True)
class ParadigmAgreement:
    source: Path  # the other paradigm's responses
    paradigms: tuple[str, str]
    units: pd.DataFrame  # per unit and condition: its accuracy in each paradigm
    correlation: pd.DataFrame  # per condition: Spearman's rho with its interval and test


@dataclass(frozen=True)
class Repeats:
    by_instruction: pd.DataFrame
    overall: pd.DataFrame


@dataclass(frozen=True)
class StudyResults:
    source: Path
    format_title: str
    included: pd.DataFrame  # responses kept after the exclusions (every trial kind)
    chance: float  # the paradigm's guessing accuracy
    accuracy: pd.DataFrame  # per model and condition, with the three intervals
    exclusions: Exclusions
    participant_means: pd.DataFrame
    breakdowns: dict[str, pd.DataFrame]
    repeats: Repeats | None
    units: pd.DataFrame  # accuracy per unit and condition
    models_differ: pd.DataFrame  # per condition: the Wald test of equal model accuracies
    comparisons: list[ModelComparison]  # Kruskal-Wallis and Conover, as the 2023 study ran them
    depth_correlation: pd.DataFrame  # Spearman per model x condition, Holm-corrected as one family
    depth_trend: pd.DataFrame  # per condition, the depth slope with models as replicates
    scaling: Scaling | None = None
    machine: MachineComparison | None = None
    unit_kinds: UnitKinds | None = None  # when the study measured more than one kind of unit
    paradigm_agreement: ParadigmAgreement | None = None  # the same units in a second paradigm
    model_facts: dict = field(default_factory=dict)  # per model: display name, parameters, ... (for the page)
    replaced: pd.DataFrame | None = None  # with the bundle: per model, units shown and refused by the build
    study: str | None = None  # with the bundle: the study's title (or id)
    notes: tuple[str, ...] = ()  # what the page must say first (e.g. that the participants are simulated)
    lead_by: tuple[str, ...] = ()  # the breakdowns the source paper reports (present in ``breakdowns``)
    lead: pd.DataFrame | None = None  # participant means by model, condition and every lead_by column

    @property
    def main(self) -> pd.DataFrame:
        return main_trials(self.included)


@dataclass(frozen=True)
class RatingResults:
    source: Path
    format_title: str
    ratings: pd.DataFrame
    summary: pd.DataFrame


def _exclusion_counts(excluded: Exclusions) -> str:
    """How many sessions each rule excluded, in words (a session failing two rules counts under both)."""
    table = excluded.table
    if table.empty or "failed_rules" not in table:
        return "the table holds no main-trial responses"
    rules = Counter(rule for cell in table["failed_rules"] for rule in str(cell).split(";") if rule)
    counted = ", ".join(f"{n} {rule}" for rule, n in rules.most_common())
    return f"{int(table['excluded'].sum())} of {len(table)} sessions excluded ({counted})"


def _exclusions(
    responses: pd.DataFrame, source: Path, mode: str, criteria: ExclusionCriteria
) -> tuple[pd.DataFrame, Exclusions]:
    fmt = FORMATS[responses.attrs["format"]]
    if mode == "ours":
        included, table = apply_exclusions(responses, criteria)
        return included, Exclusions(mode, criteria, table, thresholds=counterfactual_grid(responses, criteria))
    if mode == "published":
        if fmt.published_keep is None:
            raise ResponseTableError(
                f"{source}: --exclusions published: {fmt.title} records no exclusions of its own; "
                "use --exclusions ours or none"
            )
        try:
            included, table = published_exclusions(responses, fmt.published_keep)
        except ValueError as exc:
            raise ResponseTableError(f"{source}: --exclusions published: {exc}") from None
        if not fmt.published_keep:  # the source kept only the participants it analysed
            table = pd.DataFrame()
        return included, Exclusions(mode, criteria, table, note=fmt.published_note)
    return responses, Exclusions(mode, criteria, pd.DataFrame())


def _scaling(included: pd.DataFrame, models: dict | None, config: AnalysisConfig) -> Scaling | None:
    if not models:
        return None
    facts = with_model_facts(included, models)
    trends = scaling_trends(facts, config=config)
    robustness = robustness_checks(facts) if not trends.empty else pd.DataFrame()
    interaction = condition_interaction(facts, config=config)
    return Scaling(facts, trends, robustness, interaction, scaling_warnings(facts, trends, config), config)


def _machine(
    included: pd.DataFrame, scores_csv: Path | None, manifest: Manifest | None, models: dict | None
) -> MachineComparison | None:
    if scores_csv is None:
        return None
    main = main_trials(included)
    scores = check_machine_scores(scores_csv, load_machine_scores(scores_csv), main, manifest)
    units = human_and_machine_units(unit_accuracy_table(included), scores)
    if units.empty:
        raise ResponseTableError(f"{scores_csv}: no unit of the responses has a machine score")
    observer = str(scores["observer"].iloc[0]) if "observer" in scores else "an observer"
    calibration = None
    if {"temperature", "lapse"} <= set(scores):
        calibration = f"temperature {scores['temperature'].iloc[0]:.3g}, lapse {scores['lapse'].iloc[0]:.3g}"
    facts = None
    if models:
        facts = with_model_facts(pd.DataFrame({"model_id": list(models)}), models).set_index("model_id")
        facts = facts[[p for p in PREDICTORS if facts[p].notna().any()]]
    return MachineComparison(
        observer,
        scores_csv,
        units,
        human_and_machine_models(units),
        human_machine_correlation(units),
        noise_ceiling(main, scores),
        ppi_estimates(main, scores, facts),
        calibration,
    )


def _unit_kinds(included: pd.DataFrame, config: AnalysisConfig, n_resamples: int) -> UnitKinds | None:
    kinds = unit_kinds(included)
    if len(kinds) < 2:
        return None
    return UnitKinds(
        kinds,
        kind_accuracy(included, n_resamples=n_resamples),
        kind_differences(included, config, n_resamples=n_resamples),
        config.unit_kind_margin,
    )


def _paradigm_agreement(
    included: pd.DataFrame, other_csv: Path | None, mode: str, criteria: ExclusionCriteria, n_resamples: int
) -> ParadigmAgreement | None:
    if other_csv is None:
        return None
    other, _ = _exclusions(as_responses(load_table(other_csv)), other_csv, mode, criteria)
    try:
        paired = paired_unit_accuracy(included, other)
    except ValueError as exc:
        raise ResponseTableError(f"{other_csv}: {exc}") from None
    if paired.empty:
        raise ResponseTableError(f"{other_csv}: measured none of the units of the first table")
    return ParadigmAgreement(
        other_csv, paired.attrs["paradigms"], paired, paradigm_correlation(paired, n_resamples=n_resamples)
    )


def _repeats(included: pd.DataFrame) -> Repeats | None:
    by_instruction = repeat_agreement(included)
    if by_instruction.empty:
        return None
    return Repeats(by_instruction, repeat_agreement(included, ["model_id", "condition"]))


def analyse(
    responses_csv: Path,
    n_resamples: int = 10_000,
    format: str | None = None,
    model_id: str = "googlenet",
    criteria: ExclusionCriteria | None = None,
    exclusions: str = "ours",
    models: dict | None = None,
    machine_scores: Path | None = None,
    config: AnalysisConfig = DEFAULT_ANALYSIS,
    other_paradigm: Path | None = None,
    manifest: Manifest | None = None,
    notes: Sequence[str] = (),
) -> StudyResults | RatingResults:
    """Every estimate of the report for one table; a rating table gets its rating summary.

    ``exclusions``: ``ours`` recomputes our criteria where the table allows, ``published`` applies the
    source's own flags (the 2023 release's ``passed_checks`` / ``multi_participation``), ``none`` keeps all.
    ``models``: facts per model id, for the scaling trends; ``machine_scores``: a machine-score CSV;
    ``config``: what a claim must clear (:mod:`analysis.config`); ``other_paradigm``: responses to the
    same units in another paradigm (ours), for the per-unit agreement of the two; ``manifest``: the
    study bundle's (the study's name, the units its build replaced); ``notes``: what the page says first.
    """
    if exclusions not in EXCLUSION_MODES:
        raise ResponseTableError(f"exclusions {exclusions!r}: choose from {list(EXCLUSION_MODES)}")
    loaded = load_table(responses_csv, format=format, model_id=model_id)
    title = FORMATS[loaded.attrs["format"]].title_of(loaded)
    if loaded.attrs["kind"] == "ratings":
        return RatingResults(responses_csv, title, loaded, rating_summary(loaded))
    responses = as_responses(loaded)
    included, excluded = _exclusions(responses, responses_csv, exclusions, criteria or ExclusionCriteria())
    if included.empty:
        raise ResponseTableError(
            f"{responses_csv}: no responses left to analyse after the exclusions: {_exclusion_counts(excluded)}; "
            "see each session's values with --exclusions none (the report's exclusions.csv), or change the "
            "criteria with --criteria FILE.yaml"
        )
    units = unit_accuracy_table(included)
    chance = chance_level(included)
    accuracy = accuracy_table(included, n_resamples=n_resamples)
    accuracy["vs_chance"] = against_chance(accuracy, chance)
    split = breakdowns(included)
    lead_by = tuple(c for c in FORMATS[loaded.attrs["format"]].lead_by if c in split)
    return StudyResults(
        source=responses_csv,
        format_title=title,
        included=included,
        chance=chance,
        accuracy=accuracy,
        exclusions=excluded,
        participant_means=participant_means(included, ["model_id", "condition"]),
        breakdowns=split,
        lead_by=lead_by,
        lead=participant_means(included, ["model_id", "condition", *lead_by]) if lead_by else None,
        repeats=_repeats(included),
        units=units,
        models_differ=models_differ(included),
        comparisons=[ModelComparison(c, **r) for c, r in model_comparison(units).items()],
        depth_correlation=depth_correlation(units),
        depth_trend=depth_trend(units),
        scaling=_scaling(included, models, config),
        machine=_machine(included, machine_scores, manifest, models),
        unit_kinds=_unit_kinds(included, config, n_resamples),
        model_facts=dict(models or {}),
        paradigm_agreement=_paradigm_agreement(
            included, other_paradigm, exclusions, criteria or ExclusionCriteria(), n_resamples
        ),
        replaced=replaced_units_table(manifest) if manifest is not None else None,
        study=(manifest.title or manifest.study_id) if manifest is not None else None,
        notes=tuple(notes),
    )


def replaced_units_table(manifest: Manifest) -> pd.DataFrame:
    """Per model: the units shown, the sampled units the build refused (stimuli/acceptance.py) and replaced,
    and the places it left empty (no reserve was left)."""
    rows = []
    for model in manifest.models:
        refused = [r for r in manifest.replaced_units if r.model_id == model.id]
        rows.append(
            {
                "model_id": model.id,
                "units_shown": sum(u.model_id == model.id for u in manifest.units),
                "refused": len(refused),
                "left_empty": sum(r.replaced_by is None for r in refused),
                "problems": "; ".join(sorted({p.split(":")[0] for r in refused for p in r.problems})),
            }
        )
    return pd.DataFrame(rows)
