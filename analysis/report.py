"""``psychinterp analyze``, rendered: the results of :func:`analysis.pipeline.analyse` as CSV
tables, figures and an HTML page (a Jinja template; this module computes nothing of its own).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import jinja2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from markupsafe import Markup  # noqa: E402
from scipy import stats  # noqa: E402

from analysis.breakdown import BREAKDOWN_COLUMNS  # noqa: E402
from analysis.claims import MDE_POWER_MEASURED  # noqa: E402
from analysis.config import AnalysisConfig  # noqa: E402
from analysis.estimate import INTERVAL_COVERAGE  # noqa: E402
from analysis.exclusions import PUBLISHED_RULE, RULES, describe  # noqa: E402
from analysis.machine import NOISE_CEILING_SPLITS  # noqa: E402
from analysis.microscope import human_results  # noqa: E402
from analysis.pipeline import EXCLUSION_MODES, RatingResults, StudyResults, analyse  # noqa: E402
from analysis.ppi import PPI_COVERAGE_MEASURED, PPI_SLOPE_COVERAGE_MEASURED  # noqa: E402
from analysis.presentation import (  # noqa: E402
    INTERVAL_LABELS,
    display_names,
    for_page,
    model_order,
    noise_ceiling_sentences,
    noise_ceiling_view,
    ppi_slopes_view,
    ppi_view,
)
from analysis.scaling import MODEL_TEST_FALSE_POSITIVE_RATES, unit_table  # noqa: E402
from analysis.unit_kinds import UNIT_KIND_FALSE_POSITIVE_RATES, difference_sentence  # noqa: E402
from contracts import microscope  # noqa: E402
from contracts.bundle import Bundle, load_bundle  # noqa: E402

__all__ = ["EXCLUSION_MODES", "render_report", "scaling_sentence", "write_report"]


def accuracy_figure(
    table: pd.DataFrame, chance: float, order: list[str] | None = None, names: dict | None = None
) -> plt.Figure:
    """Bars per model (in ``order``, by display name), one per condition, with 95% CIs and the chance line."""
    models = order or list(dict.fromkeys(table["model_id"]))
    names = names or {}
    conditions = list(dict.fromkeys(table["condition"]))
    width = 0.8 / len(conditions)
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(models) + 3), 3.5))
    x = np.arange(len(models))
    for k, condition in enumerate(conditions):
        sub = table[table["condition"] == condition].set_index("model_id").reindex(models)
        err = np.vstack([sub["accuracy"] - sub["ci_low"], sub["ci_high"] - sub["accuracy"]])
        ax.bar(x + (k - (len(conditions) - 1) / 2) * width, sub["accuracy"], width, label=condition)
        ax.errorbar(
            x + (k - (len(conditions) - 1) / 2) * width,
            sub["accuracy"],
            yerr=np.nan_to_num(err),
            fmt="none",
            ecolor="black",
            capsize=3,
        )
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(x, [names.get(m, m) for m in models], rotation=30, ha="right")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("proportion correct")
    ax.legend(frameon=False, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def scaling_figure(
    responses: pd.DataFrame, trends: pd.DataFrame, chance: float, names: dict | None = None
) -> plt.Figure:
    """Model accuracy (mean of unit accuracies) against log10 parameters, the fitted line and its 95% band,
    each point labelled with its model (``names``: display names).

    The band is the OLS mean-prediction interval of the second stage: fitted ± t(models - 2) ×
    residual SD × sqrt(1/models + (x - mean x)² / Sxx), drawn within [0, 1] (a proportion).
    """
    names = names or {}
    units = unit_table(responses, ["log10_parameters"])
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for condition, group in units.groupby("condition", sort=True):
        per_model = group.groupby("model_id").agg(x=("log10_parameters", "first"), y=("accuracy", "mean"))
        points = ax.scatter(per_model["x"], per_model["y"], label=condition)
        for model_id, point in per_model.iterrows():
            label = names.get(model_id, model_id)
            ax.annotate(label, (point["x"], point["y"]), textcoords="offset points", xytext=(4, 3), fontsize="x-small")
        row = trends[(trends["condition"] == condition) & (trends["predictor"] == "log10_parameters")]
        if len(row):
            fit = row.iloc[0]
            colour = points.get_facecolor()[0]
            xs = np.linspace(per_model["x"].min(), per_model["x"].max(), 50)
            mean_x, n = per_model["x"].mean(), len(per_model)
            fitted = per_model["y"].mean() + fit["slope"] * (xs - mean_x)
            sxx = ((per_model["x"] - mean_x) ** 2).sum()
            half = stats.t.ppf(0.975, n - 2) * fit["residual_sd_models"] * np.sqrt(1 / n + (xs - mean_x) ** 2 / sxx)
            ax.plot(xs, fitted, color=colour)
            band = np.clip(fitted - half, 0, 1), np.clip(fitted + half, 0, 1)
            ax.fill_between(xs, *band, alpha=0.2, color=colour, linewidth=0)
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1)
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, 0), min(high, 1.02))
    ax.set_xlabel("log10 parameters")
    ax.set_ylabel("proportion correct")
    ax.legend(frameon=False, fontsize="small")
    fig.tight_layout()
    return fig


def _panels_per_condition(
    units: pd.DataFrame,
    draw,
    xlabel: str,
    ylabel: str,
    chance: float,
    width: float = 4.5,
    order: list[str] | None = None,
    names: dict | None = None,
) -> plt.Figure:
    """One panel per condition, ``draw(ax, label, rows)`` once per model in ``order``, chance line, legend."""
    conditions = sorted(units["condition"].unique())
    order = order or sorted(units["model_id"].unique())
    names = names or {}
    fig, axes = plt.subplots(1, len(conditions), figsize=(width * len(conditions), 3.4), squeeze=False, sharey=True)
    for ax, condition in zip(axes[0], conditions, strict=True):
        shown = units[units["condition"] == condition]
        for model_id in order:
            group = shown[shown["model_id"] == model_id]
            if len(group):
                draw(ax, names.get(model_id, model_id), group)
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1)
        ax.set_title(condition)
        ax.set_xlabel(xlabel)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(frameon=False, fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def depth_figure(units: pd.DataFrame, chance: float, **models) -> plt.Figure | None:
    """Unit accuracy against relative layer depth, one panel per condition, a line per model."""
    if "relative_depth" not in units or units["relative_depth"].isna().all():
        return None

    def draw(ax, model_id: str, group: pd.DataFrame) -> None:
        binned = group.groupby(group["relative_depth"].round(1))["accuracy"].mean()
        ax.plot(binned.index, binned.to_numpy(), marker="o", markersize=3, label=model_id)

    return _panels_per_condition(units, draw, "relative layer depth", "unit accuracy", chance, **models)


def machine_figure(units: pd.DataFrame, chance: float, **models) -> plt.Figure:
    """Human unit accuracy against machine score, a panel per condition, a colour per model."""

    def draw(ax, model_id: str, group: pd.DataFrame) -> None:
        ax.scatter(group["machine_score"], group["accuracy"], s=18, label=model_id)
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)

    return _panels_per_condition(units, draw, "machine score", "human unit accuracy", chance, width=4.2, **models)


def ppi_figure(cells: pd.DataFrame, chance: float, order: list[str], names: dict) -> plt.Figure:
    """Per model, the human-only interval beside the machine-assisted (PPI) one, a panel per condition."""
    conditions = sorted(cells["condition"].unique())
    fig, axes = plt.subplots(1, len(conditions), figsize=(4.5 * len(conditions), 3.4), squeeze=False, sharey=True)
    rank = {m: i for i, m in enumerate(order)}
    several_kinds = cells["unit_kind"].nunique() > 1
    for ax, condition in zip(axes[0], conditions, strict=True):
        rows = cells[cells["condition"] == condition]
        rows = rows.assign(_rank=rows["model_id"].map(rank).fillna(len(rank))).sort_values(["_rank", "unit_kind"])
        x = np.arange(len(rows))
        for offset, prefix, label in ((-0.15, "human", "people only"), (0.15, "ppi", "with the machine (PPI)")):
            estimate = rows[f"{prefix}_estimate"].to_numpy()
            error = [estimate - rows[f"{prefix}_ci_low"].to_numpy(), rows[f"{prefix}_ci_high"].to_numpy() - estimate]
            ax.errorbar(x + offset, estimate, yerr=error, fmt="o", capsize=3, label=label)
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1)
        labels = [
            names.get(m, m) + (f" · {k}" if several_kinds else "")
            for m, k in zip(rows["model_id"], rows["unit_kind"], strict=True)
        ]
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize="small")
        ax.set_title(condition)
    axes[0][0].set_ylabel("mean unit accuracy (95% CI)")
    axes[0][-1].legend(frameon=False, fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def confidence_figure(responses: pd.DataFrame, chance: float) -> plt.Figure:
    """Accuracy at each confidence level, per condition (are confident answers more often right?)."""
    data = responses.groupby(["condition", "confidence"])["correct"].agg(["mean", "count"]).reset_index()
    fig, ax = plt.subplots(figsize=(4.5, 3.3))
    for condition, group in data.groupby("condition", sort=True):
        se = np.sqrt(group["mean"] * (1 - group["mean"]) / group["count"])
        ax.errorbar(group["confidence"], group["mean"], yerr=1.96 * se, marker="o", capsize=3, label=condition)
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks([1, 2, 3])
    ax.set_xlabel("confidence")
    ax.set_ylabel("proportion correct")
    ax.legend(frameon=False, fontsize="small")
    fig.tight_layout()
    return fig


def counterfactual_figure(grid: pd.DataFrame, names: dict | None = None) -> plt.Figure:
    """Accuracy of the kept participants as one criterion's threshold moves, a line per model and condition."""
    names = names or {}
    criteria = list(dict.fromkeys(grid["criterion"]))
    fig, axes = plt.subplots(1, len(criteria), figsize=(3.2 * len(criteria), 3.0), squeeze=False, sharey=True)
    for ax, criterion in zip(axes[0], criteria, strict=True):
        data = grid[grid["criterion"] == criterion]
        for (model_id, condition), group in data.groupby(["model_id", "condition"], sort=True):
            label = f"{names.get(model_id, model_id)}, {condition}"
            ax.plot(group["threshold"], group["accuracy"], marker="o", markersize=3, label=label)
        default = data.loc[data["is_default"], "threshold"]
        if len(default):
            ax.axvline(default.iloc[0], color="grey", linestyle=":", linewidth=1)
        ax.set_title(criterion.replace("_", " "), fontsize="small")
    axes[0][0].set_ylabel("accuracy of kept participants")
    axes[0][-1].legend(frameon=False, fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


_PREDICTOR_WORDS = {
    "log10_parameters": ("scale", "percentage points per decade of parameters"),
    "log10_train_images": ("training-set size", "percentage points per decade of training images"),
    "imagenet_top1": ("ImageNet accuracy", "percentage points per point of top-1"),
}


def _level(confidence: float) -> str:
    """A confidence level in words: 0.95 -> '95%', 0.9667 -> '96.7%'."""
    return f"{confidence:.1%}".replace(".0%", "%")


def scaling_sentence(row, config: AnalysisConfig, subject: str = "accuracy", by_kind: bool = False) -> str:
    """One plain sentence per slope, chosen by its verdict (:func:`analysis.claims.verdict`), e.g.
    'natural: inconclusive about scale: slope +0.8 percentage points per decade of parameters [-2.9, +4.4]
    (95% simultaneous over the 2 slopes of its Holm family); the corrected tests rule out neither zero
    nor ±2.0; p = 0.52 (Holm 1), 9 models; with the Holm correction over 2 slopes, this design detects
    ±5.1 with 80% power'. Each claim names the interval or test it rests on, and the interval printed
    is the one that matches the corrected test."""
    what, unit = _PREDICTOR_WORDS.get(row.predictor, (row.predictor, "percentage points per unit"))
    m, size = row.margin * 100, int(row.family_size)
    over = f" over the {size} slopes of its Holm family" if size > 1 else ""
    interval = f"[{row.sim_ci_low * 100:+.1f}, {row.sim_ci_high * 100:+.1f}]"
    kind = f"{_level(1 - config.alpha)} simultaneous{over}" if size > 1 else f"{_level(1 - config.alpha)} CI"
    estimate = f"slope {row.slope * 100:+.1f} {unit} {interval} ({kind})"
    if row.verdict in ("rises", "falls"):
        claim = f"{subject} {row.verdict} with {what}: {estimate}"
        if row.sim_ci_low <= 0 <= row.sim_ci_high:
            claim += "; Holm's step-down rejects zero although this interval, which does not step down, includes it"
    elif row.verdict == "equivalent":
        # TOST at alpha over the family: the (1 - 2 alpha / size) interval must lie inside the margin.
        inside = -row.margin < row.tost_ci_low and row.tost_ci_high < row.margin
        claim = (
            f"no effect of {what} beyond ±{m:.1f} (equivalent: the {_level(1 - 2 * config.alpha / size)} interval "
            f"[{row.tost_ci_low * 100:+.1f}, {row.tost_ci_high * 100:+.1f}] "
            + ("lies inside" if inside else "reaches beyond it, but Holm's step-down still rejects both margins")
            + f", TOST p = {row.tost_p_holm:.2g}{' Holm' if size > 1 else ''}): {estimate}"
        )
    else:
        claim = f"inconclusive about {what}: {estimate}; the corrected tests rule out neither zero nor ±{m:.1f}"
    where = f"{row.condition}, {row.unit_kind} units" if by_kind else row.condition
    if getattr(row, "family", "primary") == "secondary":
        where = f"{where} (secondary)"
    p = f"p = {row.p:.2g} (Holm {row.p_holm:.2g})" if size > 1 else f"p = {row.p:.2g}"
    detects = f"with the Holm correction over {size} slopes, this design" if size > 1 else "this design"
    power = f"detects ±{row.mde * 100:.1f} with {config.power:.0%} power"
    return f"{where}: {claim}; {p}, {row.n_models} models; {detects} {power}"


def rating_figure(summary: pd.DataFrame, ratings: pd.DataFrame) -> plt.Figure:
    """Each participant's rating per trial (dots) and the group means with 95% intervals."""
    groups = [c for c in ("phase", "expert_level") if c in ratings]
    labels = ratings[groups].astype(str).agg(" ".join, axis=1) if groups else pd.Series("all", index=ratings.index)
    names = sorted(ratings["trial_name"].unique())
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 3, 3.4))
    levels = list(dict.fromkeys(labels))
    width = 0.8 / len(levels)
    rng = np.random.default_rng(0)
    for k, level in enumerate(levels):
        rows = ratings[labels == level]
        x = rows["trial_name"].map({n: i for i, n in enumerate(names)}) + (k - (len(levels) - 1) / 2) * width
        ax.scatter(x + rng.uniform(-0.05, 0.05, len(x)), rows["rating"], s=10, alpha=0.5, label=level)
        means = rows.groupby("trial_name")["rating"].mean().reindex(names)
        ax.plot(np.arange(len(names)) + (k - (len(levels) - 1) / 2) * width, means, "_", markersize=18, color="black")
    ax.axhline(0, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(-105, 105)
    ax.set_xlabel("trial")
    ax.set_ylabel("rating (-100 not intuitive, 100 intuitive)")
    ax.legend(frameon=False, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def _save(fig: plt.Figure, out: Path, name: str) -> str:
    for suffix in ("png", "pdf"):
        fig.savefig(out / f"{name}.{suffix}", dpi=150)
    plt.close(fig)
    return f"{name}.png"


def _models(results: StudyResults) -> tuple[list[str], dict[str, str]]:
    """The page's model order (by scale) and display names."""
    ids = list(dict.fromkeys(results.accuracy["model_id"])) if not results.accuracy.empty else []
    return model_order(results.model_facts, ids), display_names(results.model_facts, ids)


def _html(
    table: pd.DataFrame | None, digits: str = ".3g", index: bool = False, models: tuple | None = None
) -> Markup | None:
    """A table as HTML (pandas escapes the cells), or None when there is nothing to show."""
    if table is None or table.empty:
        return None
    if models is not None:
        table = for_page(table, *models)
    return Markup(table.to_html(index=index, float_format=lambda v: f"{v:{digits}}", na_rep=""))


def _environment() -> jinja2.Environment:
    templates = resources.files("analysis") / "templates"
    return jinja2.Environment(
        # The report's own pages, and the microscope's (shared with the server's live pages).
        loader=jinja2.FunctionLoader(
            lambda name: (templates / name).read_text() if (templates / name).is_file() else microscope.template(name)
        ),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def _write_csvs(results: StudyResults, out: Path) -> None:
    """Every table behind the page, under its own name (what the page's text refers to)."""
    tables = {
        "accuracy": results.accuracy,
        "participant_means": results.participant_means,
        "unit_accuracy": results.units,
        "depth_correlation": results.depth_correlation,
        "depth_trend": results.depth_trend,
        "models_differ": results.models_differ,
    }
    tables |= {f"breakdown_{name.replace('+', '_')}": table for name, table in results.breakdowns.items()}
    tables |= {f"conover_holm_{c.condition}": c.conover_holm_p for c in results.comparisons}
    if results.repeats is not None:
        tables["repeat_agreement"] = results.repeats.by_instruction
    exclusions = results.exclusions
    if exclusions.mode != "none":
        tables["exclusions"] = exclusions.table
    if exclusions.thresholds is not None:
        tables["exclusion_thresholds"] = exclusions.thresholds
    if results.scaling is not None:
        tables["scaling"] = results.scaling.trends
        tables["scaling_interaction"] = results.scaling.interaction
        if not results.scaling.trends.empty:
            tables["scaling_robustness"] = results.scaling.robustness
    if results.machine is not None:
        machine = results.machine
        tables |= {"machine_units": machine.units, "machine_models": machine.models}
        tables["machine_correlation"] = machine.correlation
        tables["machine_noise_ceiling"] = machine.ceiling
        tables["ppi_models"] = machine.ppi.cells
        tables["ppi_weights"] = machine.ppi.weights
        if not machine.ppi.slopes.empty:
            tables["ppi_slopes"] = machine.ppi.slopes
    if results.paradigm_agreement is not None:
        tables["paradigm_units"] = results.paradigm_agreement.units
        tables["paradigm_agreement"] = results.paradigm_agreement.correlation
    if results.unit_kinds is not None:
        tables["unit_kind_accuracy"] = results.unit_kinds.accuracy
        tables["unit_kind_differences"] = results.unit_kinds.differences
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=name.startswith("conover_holm_"))


FIGURES = ("accuracy", "confidence", "depth", "exclusion_thresholds", "scaling", "machine", "ppi")


def _draw_figures(results: StudyResults, out: Path) -> dict[str, str]:
    """The figures the results call for (names from FIGURES), drawn and saved; their PNG names."""
    chance = results.chance
    order, names = _models(results)
    figures = {"accuracy": _save(accuracy_figure(results.accuracy, chance, order, names), out, "accuracy")}
    figures["confidence"] = _save(confidence_figure(results.main, chance), out, "confidence")
    depth = depth_figure(results.units, chance, order=order, names=names)
    if depth is not None:
        figures["depth"] = _save(depth, out, "depth")
    thresholds = results.exclusions.thresholds
    if thresholds is not None and not thresholds.empty:
        figures["exclusion_thresholds"] = _save(counterfactual_figure(thresholds, names), out, "exclusion_thresholds")
    if results.scaling is not None and not results.scaling.trends.empty:
        figures["scaling"] = _save(
            scaling_figure(results.scaling.facts, results.scaling.trends, chance, names), out, "scaling"
        )
    if results.machine is not None:
        figures["machine"] = _save(
            machine_figure(results.machine.units, chance, order=order, names=names), out, "machine"
        )
        if not results.machine.ppi.cells.empty:
            figures["ppi"] = _save(ppi_figure(results.machine.ppi.cells, chance, order, names), out, "ppi")
    return figures


def _exclusion_context(results: StudyResults, models: tuple | None = None) -> dict:
    exclusions = results.exclusions
    table = exclusions.table
    judged = "session" if "session_id" in table else "participant"
    if table.empty:
        return {"n_judged": 0, "n_excluded": 0, "judged": judged, "rule_counts": [], "excluded_table": None}
    if exclusions.mode == "published":
        flags = sorted({r for rules in table["failed_rules"] for r in rules.split(";") if r})
        counts = [
            (
                flag.removeprefix(PUBLISHED_RULE.format(column="")),
                int(table["failed_rules"].str.contains(flag, regex=False).sum()),
            )
            for flag in flags
        ]
    else:
        counts = [
            (describe(rule, exclusions.criteria), int(table["failed_rules"].str.contains(rule).sum())) for rule in RULES
        ]
    excluded = table[table["excluded"]]
    shown = [c for c in ("participant_id", "session_id", "failed_rules", "exclusion_reason") if c in table]
    return {
        "n_judged": len(table),
        "n_excluded": len(excluded),
        "judged": judged,
        "rule_counts": counts,
        "excluded_table": _html(excluded[shown], models=models),
    }


# How an interval stands to chance (analysis.estimate.against_chance), in words that read as a sentence.
CHANCE_WORDS = {
    "above": "above chance",
    "below": "below chance",
    "not distinguishable": "not distinguishable from chance",
}


def _with_sem(row) -> str:
    return f"{row.accuracy:.1%} ± {2 * row.sem:.1%}"


def lead_points(results: StudyResults, names: dict[str, str]) -> list[str]:
    """The numbers the source paper reports (its ``lead_by`` breakdowns), one line per group of the first
    lead column, with the others inside it: mean over participants ± 2 SEM, as the paper prints them."""
    first, rest = results.lead_by[0], results.lead_by[1:]
    overall = results.breakdowns[first]
    several_models = overall["model_id"].nunique() > 1
    points = []
    for row in overall.itertuples():
        model = f"{names.get(row.model_id, row.model_id)}, " if several_models else ""
        inside = results.lead.loc[
            (results.lead["model_id"] == row.model_id)
            & (results.lead["condition"] == row.condition)
            & (results.lead[first] == getattr(row, first))
        ]
        split = "; ".join(
            ", ".join(str(getattr(r, c)) for c in rest) + f" {_with_sem(r)} ({r.n_participants} participants)"
            for r in inside.itertuples()
        )
        points.append(
            f"{model}{getattr(row, first)}, {row.condition}: {_with_sem(row)} (mean over {row.n_participants} "
            f"participants ± 2 SEM)" + (f"; {split}" if rest and len(inside) > 1 else "")
        )
    return points


def summary_points(results: StudyResults, order: list[str], names: dict[str, str]) -> list[str]:
    """What the study found, in the sentences the sections below state with their evidence.

    Where the source paper reports its results by some breakdown (Borowski et al.'s Experiment II: the
    four instruction conditions, experts and lay), those lead, and the pooled numbers follow, labelled.
    """
    points = lead_points(results, names) if results.lead_by else []
    pooled = ""
    if results.lead_by:
        words = " and ".join(BREAKDOWN_COLUMNS[c].split(" (")[0] for c in results.lead_by)
        pooled = f"pooled over {words} (secondary: the paper reports them separately), "
    rank = {m: i for i, m in enumerate(order)}
    for condition, rows in results.accuracy.groupby("condition", sort=True):
        rows = rows.assign(_rank=rows["model_id"].map(rank)).sort_values("_rank")
        above = int((rows["vs_chance"] == "above").sum())
        if len(rows) == 1:
            row = rows.iloc[0]
            points.append(
                f"{pooled}{condition}: accuracy {row.accuracy:.1%} for {names.get(row.model_id, row.model_id)} "
                f"(95% CI {row.ci_low:.1%} to {row.ci_high:.1%}; {CHANCE_WORDS[row.vs_chance]})"
            )
            continue
        low, high = rows.loc[rows["accuracy"].idxmin()], rows.loc[rows["accuracy"].idxmax()]
        chance_words = "all above chance" if above == len(rows) else f"{above} of {len(rows)} above chance"
        points.append(
            f"{pooled}{condition}: accuracy from {low.accuracy:.1%} ({names.get(low.model_id, low.model_id)}) to "
            f"{high.accuracy:.1%} ({names.get(high.model_id, high.model_id)}) across {len(rows)} models, "
            f"{chance_words}"
        )
    scaling = results.scaling
    if scaling is not None and not scaling.trends.empty:
        by_kind = results.unit_kinds is not None
        points += [
            scaling_sentence(row, scaling.config, by_kind=by_kind)
            for row in scaling.trends.itertuples()
            if row.family == "primary"
        ]
    if results.unit_kinds is not None:
        points += [difference_sentence(r) for r in results.unit_kinds.differences.itertuples()]
    if results.paradigm_agreement is not None:
        points += [agreement_sentence(r) for r in results.paradigm_agreement.correlation.itertuples()]
    return points


def agreement_sentence(row) -> str:
    """A row of the paradigms' agreement table, with its interval only where it is defined."""
    undefined = (
        f"ρ is undefined in {row.undefined_resamples:.0%} of the resamples (one paradigm's accuracies all equal)"
    )
    if np.isnan(row.ci_low):
        interval = f"no 95% CI: {undefined}"
    elif row.undefined_resamples > 0:
        interval = f"95% CI {row.ci_low:+.2f} to {row.ci_high:+.2f} over the rest; {undefined}"
    else:
        interval = f"95% CI {row.ci_low:+.2f} to {row.ci_high:+.2f}"
    return (
        f"{row.paradigms}, {row.condition}: per-unit agreement Spearman ρ = {row.spearman_rho:+.2f} "
        f"({interval}; {row.n_units} units; Holm p = {row.p_holm:.2g})"
    )


def _study_page(results: StudyResults, figures: dict[str, str], with_units: bool = False) -> str:
    models = _models(results)

    def html(table: pd.DataFrame | None, digits: str = ".3g") -> Markup | None:
        return _html(table, digits, models=models)

    exclusion = _exclusion_context(results, models)
    repeats = None
    if results.repeats is not None:
        overall = results.repeats.overall.assign(instr_type="(all)")
        repeats = html(pd.concat([results.repeats.by_instruction, overall], ignore_index=True))
    scaling = results.scaling
    machine = results.machine
    kinds = results.unit_kinds
    tables = {
        "accuracy": html(results.accuracy, ".3f"),
        "participant_means": html(results.participant_means, ".3f"),
        "repeats": repeats,
        "depth_correlation": html(results.depth_correlation),
        "depth_trend": html(results.depth_trend),
        "models_differ": html(results.models_differ),
        "interaction": html(scaling.interaction) if scaling is not None else None,
        "scaling": html(scaling.trends) if scaling is not None else None,
        "robustness": html(scaling.robustness) if scaling is not None else None,
        "machine_models": html(machine.models, ".3f") if machine is not None else None,
        "machine_correlation": html(machine.correlation) if machine is not None else None,
        "noise_ceiling": html(noise_ceiling_view(machine.ceiling)) if machine is not None else None,
        "ppi_models": html(ppi_view(machine.ppi.cells)) if machine is not None else None,
        "ppi_slopes": html(ppi_slopes_view(machine.ppi.slopes)) if machine is not None else None,
        "excluded": exclusion.pop("excluded_table"),
        "unit_kind_accuracy": html(kinds.accuracy, ".3f") if kinds is not None else None,
        "paradigm_agreement": (
            html(results.paradigm_agreement.correlation) if results.paradigm_agreement is not None else None
        ),
        "unit_kind_differences": html(kinds.differences, ".3g") if kinds is not None else None,
        "replaced": html(results.replaced)
        if results.replaced is not None and results.replaced["refused"].any()
        else None,
    }
    breakdown_sections = [
        {
            "title": name.replace("+", " × "),
            "words": "; ".join(BREAKDOWN_COLUMNS[c] for c in name.split("+")),
            "table": html(table),
            "lead": name in results.lead_by,
        }
        for name, table in results.breakdowns.items()
        if not table.empty
    ]
    if results.lead is not None and len(results.lead_by) > 1:  # the paper's crossed table, first of all
        crossed = " × ".join(results.lead_by)
        words = "; ".join(BREAKDOWN_COLUMNS[c] for c in results.lead_by)
        breakdown_sections = [
            {"title": crossed, "words": words, "table": html(results.lead), "lead": True},
            *(b for b in breakdown_sections if b["title"] != crossed),
        ]
    sentences = (
        [scaling_sentence(row, scaling.config, by_kind=kinds is not None) for row in scaling.trends.itertuples()]
        if scaling is not None and not scaling.trends.empty
        else []
    )
    return (
        _environment()
        .get_template("report.html")
        .render(
            r=results,
            n_responses=len(results.main),
            n_rows=len(results.included),
            interval_coverage=INTERVAL_COVERAGE,
            interval_labels=INTERVAL_LABELS,
            models_differ_fpr=MODEL_TEST_FALSE_POSITIVE_RATES["models_differ"],
            mde_power="–".join(f"{v:.1%}" for v in MDE_POWER_MEASURED),
            ppi_coverage="–".join(f"{v:.1%}" for v in PPI_COVERAGE_MEASURED),
            ppi_slope_coverage="–".join(f"{v:.1%}" for v in PPI_SLOPE_COVERAGE_MEASURED),
            ppi_withheld=machine.ppi.withheld if machine is not None else [],
            ceiling_splits=NOISE_CEILING_SPLITS,
            kruskal_fpr=MODEL_TEST_FALSE_POSITIVE_RATES["kruskal_wallis"],
            below_chance=results.accuracy[results.accuracy["vs_chance"] == "below"],
            n_participants=results.included["participant_id"].nunique(),
            tables=tables,
            breakdowns=breakdown_sections,
            conover={c.condition: _html(c.conover_holm_p, index=True) for c in results.comparisons},
            figures=dict.fromkeys(FIGURES) | figures,
            summary=summary_points(results, *models),
            with_units=with_units,
            model_names=[models[1].get(m, m) for m in models[0]],
            scaling_sentences=sentences,
            kind_sentences=[difference_sentence(r) for r in kinds.differences.itertuples()] if kinds else [],
            unit_kinds=kinds,
            unit_kind_fpr=UNIT_KIND_FALSE_POSITIVE_RATES,
            scaling_warnings=scaling.warnings if scaling is not None else [],
            interaction_sentences=(
                [scaling_sentence(r, scaling.config, "the difference") for r in scaling.interaction.itertuples()]
                if scaling is not None and not scaling.interaction.empty
                else []
            ),
            margins=(
                [
                    (_PREDICTOR_WORDS.get(p, (p,))[0], scaling.config.margin(p))
                    for p in dict.fromkeys(scaling.trends["predictor"])
                ]
                if sentences
                else []
            ),
            **exclusion,
        )
    )


def _ratings_page(results: RatingResults, out: Path) -> str:
    results.summary.to_csv(out / "ratings.csv", index=False)
    _save(rating_figure(results.summary, results.ratings), out, "ratings")
    return (
        _environment()
        .get_template("ratings.html")
        .render(
            r=results,
            n_participants=results.ratings["participant_id"].nunique(),
            summary=_html(results.summary, ".1f"),
        )
    )


def render_units(results: StudyResults, bundle: Bundle, out: Path) -> Path:
    """The unit microscope: ``out/units/<unit>.html`` for every unit and a sortable ``units/index.html``.

    Images are referenced from the bundle (a relative path), never copied per page.
    """
    folder = out / "units"
    folder.mkdir(parents=True, exist_ok=True)
    images = Path(os.path.relpath(bundle.root.resolve() / "images", folder.resolve())).as_posix()
    order, names = _models(results)
    machine = results.machine.units if results.machine is not None else None
    views = microscope.with_human(microscope.unit_views(bundle, names), human_results(results.included, machine))
    environment = _environment()
    links = {
        "stylesheet": f"../{microscope.STYLESHEET}",
        "script": microscope.INDEX_SCRIPT,
        "report_url": "../index.html",
        "note": None,
    }
    (folder / microscope.INDEX_SCRIPT).write_text(microscope.template(microscope.INDEX_SCRIPT))
    unit_page = environment.get_template("unit.html")
    ceiling = (
        noise_ceiling_sentences(results.machine.ceiling, results.machine.observer)
        if results.machine is not None
        else []
    )
    for view in views:
        page = unit_page.render(v=view, images=images, index_url="index.html", machine_ceiling=ceiling, **links)
        (folder / f"{view.unit.unit_id}.html").write_text(page)
    rows = microscope.index_rows(views, {m: i for i, m in enumerate(order)})
    replaced = microscope.replaced_rows(bundle, names)
    index = folder / "index.html"
    index.write_text(environment.get_template("units_index.html").render(rows=rows, replaced=replaced, **links))
    return index


def render_report(results: StudyResults | RatingResults, out: Path, bundle: Bundle | None = None) -> Path:
    """Write the results' tables (CSV), figures (PNG and PDF) and ``index.html`` into ``out``; with the
    study's bundle, the unit microscope too (``units/``)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / microscope.STYLESHEET).write_text(microscope.template(microscope.STYLESHEET))
    if isinstance(results, RatingResults):
        text = _ratings_page(results, out)
    else:
        _write_csvs(results, out)
        units = render_units(results, bundle, out) if bundle is not None else None
        text = _study_page(results, _draw_figures(results, out), units is not None)
    page = out / "index.html"
    page.write_text(text)
    return page


def write_report(responses_csv: Path, out: Path, bundle: Path | None = None, **options) -> Path:
    """Analyse a response table and render the report (with the unit microscope when the study's
    ``bundle`` is given); returns the page.

    ``options`` are those of :func:`analysis.pipeline.analyse` (resamples, format, criteria, exclusions,
    model facts, machine scores).
    """
    loaded = load_bundle(bundle) if bundle else None
    manifest = loaded.manifest if loaded is not None else None
    return render_report(analyse(responses_csv, manifest=manifest, **options), out, loaded)
