"""``psychinterp analyze``: tables, a figure and an HTML page."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.breakdown import (  # noqa: E402
    BREAKDOWN_COLUMNS,
    breakdowns,
    participant_means,
    rating_summary,
    repeat_agreement,
)
from analysis.estimate import (  # noqa: E402
    accuracy_table,
    chance_level,
    depth_correlation,
    model_comparison,
    unit_accuracy,
)
from analysis.exclusions import (  # noqa: E402
    PUBLISHED_RULE,
    RULES,
    ExclusionCriteria,
    apply_exclusions,
    counterfactual_grid,
    describe,
    published_exclusions,
)
from analysis.formats import FORMATS  # noqa: E402
from analysis.load import ResponseTableError, as_responses, load_machine_scores, load_table  # noqa: E402
from analysis.machine import (  # noqa: E402
    human_and_machine_models,
    human_and_machine_units,
    human_machine_correlation,
)
from analysis.scaling import robustness_checks, scaling_trends, unit_table, with_model_facts  # noqa: E402


def accuracy_figure(table: pd.DataFrame, chance: float) -> plt.Figure:
    """Bars per model, one per condition, with 95% CIs and the chance line."""
    models = list(dict.fromkeys(table["model_id"]))
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
    ax.set_xticks(x, models, rotation=30, ha="right")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("proportion correct")
    ax.legend(frameon=False, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def scaling_figure(responses: pd.DataFrame, trends: pd.DataFrame, chance: float) -> plt.Figure:
    """Model accuracy (mean of unit accuracies) against log10 parameters, with the fitted trend and its band."""
    units = unit_table(responses, ["log10_parameters"])
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for condition, group in units.groupby("condition", sort=True):
        per_model = group.groupby("model_id").agg(x=("log10_parameters", "first"), y=("accuracy", "mean"))
        points = ax.scatter(per_model["x"], per_model["y"], label=condition)
        row = trends[(trends["condition"] == condition) & (trends["predictor"] == "log10_parameters")]
        if len(row):
            fit = row.iloc[0]
            xs = np.linspace(per_model["x"].min(), per_model["x"].max(), 50)
            centre = xs - per_model["x"].mean()
            mean_y = per_model["y"].mean()
            ax.plot(xs, mean_y + fit["slope"] * centre, color=points.get_facecolor()[0])
            ax.fill_between(
                xs,
                mean_y + fit["ci_low"] * centre,
                mean_y + fit["ci_high"] * centre,
                alpha=0.2,
                color=points.get_facecolor()[0],
                linewidth=0,
            )
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("log10 parameters")
    ax.set_ylabel("proportion correct")
    ax.legend(frameon=False, fontsize="small")
    fig.tight_layout()
    return fig


def _panels_per_condition(
    units: pd.DataFrame, draw, xlabel: str, ylabel: str, chance: float, width: float = 4.5
) -> plt.Figure:
    """One panel per condition, ``draw(ax, model_id, rows)`` once per model, chance line, legend at the side."""
    conditions = sorted(units["condition"].unique())
    fig, axes = plt.subplots(1, len(conditions), figsize=(width * len(conditions), 3.4), squeeze=False, sharey=True)
    for ax, condition in zip(axes[0], conditions, strict=True):
        for model_id, group in units[units["condition"] == condition].groupby("model_id", sort=True):
            draw(ax, model_id, group)
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1)
        ax.set_title(condition)
        ax.set_xlabel(xlabel)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(frameon=False, fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def depth_figure(units: pd.DataFrame, chance: float) -> plt.Figure | None:
    """Unit accuracy against relative layer depth, one panel per condition, a line per model."""
    if "relative_depth" not in units or units["relative_depth"].isna().all():
        return None

    def draw(ax, model_id: str, group: pd.DataFrame) -> None:
        binned = group.groupby(group["relative_depth"].round(1))["accuracy"].mean()
        ax.plot(binned.index, binned.to_numpy(), marker="o", markersize=3, label=model_id)

    return _panels_per_condition(units, draw, "relative layer depth", "unit accuracy", chance)


def machine_figure(units: pd.DataFrame, chance: float) -> plt.Figure:
    """Human unit accuracy against machine score, a panel per condition, a colour per model."""

    def draw(ax, model_id: str, group: pd.DataFrame) -> None:
        ax.scatter(group["machine_score"], group["accuracy"], s=18, label=model_id)
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)

    return _panels_per_condition(units, draw, "machine score", "human unit accuracy", chance, width=4.2)


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


def counterfactual_figure(grid: pd.DataFrame) -> plt.Figure:
    criteria = list(dict.fromkeys(grid["criterion"]))
    fig, axes = plt.subplots(1, len(criteria), figsize=(3.2 * len(criteria), 3.0), squeeze=False, sharey=True)
    for ax, criterion in zip(axes[0], criteria, strict=True):
        data = grid[grid["criterion"] == criterion]
        for (model_id, condition), group in data.groupby(["model_id", "condition"], sort=True):
            ax.plot(group["threshold"], group["accuracy"], marker="o", markersize=3, label=f"{model_id} {condition}")
        default = data.loc[data["is_default"], "threshold"]
        if len(default):
            ax.axvline(default.iloc[0], color="grey", linestyle=":", linewidth=1)
        ax.set_title(criterion.replace("_", " "), fontsize="small")
    axes[0][0].set_ylabel("accuracy of kept participants")
    fig.tight_layout()
    return fig


_PREDICTOR_WORDS = {
    "log10_parameters": ("scale", "percentage points per decade of parameters"),
    "log10_train_images": ("training-set size", "percentage points per decade of training images"),
    "imagenet_top1": ("ImageNet accuracy", "percentage points per point of top-1"),
}


def scaling_sentence(row) -> str:
    """One plain sentence per slope, e.g. 'natural: no detectable effect of scale: slope +0.8 ... [-1.9, +3.4]'."""
    what, unit = _PREDICTOR_WORDS.get(row.predictor, (row.predictor, "percentage points per unit"))
    if row.ci_low > 0:
        verdict = f"accuracy rises with {what}"
    elif row.ci_high < 0:
        verdict = f"accuracy falls with {what}"
    else:
        verdict = f"no detectable effect of {what}"
    return (
        f"{row.condition}: {verdict}: slope {row.slope * 100:+.1f} {unit} "
        f"[{row.ci_low * 100:+.1f}, {row.ci_high * 100:+.1f}], p = {row.p:.2g} ({row.n_models} models)"
    )


def _save(fig: plt.Figure, out: Path, name: str) -> None:
    for suffix in ("png", "pdf"):
        fig.savefig(out / f"{name}.{suffix}", dpi=150)
    plt.close(fig)


def _table_html(title: str, table: pd.DataFrame, note: str = "") -> str:
    if table.empty:
        return ""
    return f"<h2>{html.escape(title)}</h2>{note}" + table.to_html(
        index=False, float_format=lambda v: f"{v:.3g}", na_rep=""
    )


def _statistics_html(responses: pd.DataFrame, out: Path, models) -> str:
    units = unit_accuracy(responses)
    units.to_csv(out / "unit_accuracy.csv", index=False)
    parts = []
    chance = chance_level(responses)
    figure = depth_figure(units, chance)
    if figure is not None:
        _save(figure, out, "depth")
        parts.append("<img src='depth.png' alt='unit accuracy by relative layer depth' style='max-width:100%'>")
    main = responses[responses["trial_kind"] == "main"] if "trial_kind" in responses else responses
    _save(confidence_figure(main, chance), out, "confidence")
    parts.append("<h2>Confidence and accuracy</h2><img src='confidence.png' alt='accuracy by confidence'>")
    for condition, result in model_comparison(units).items():
        conover = result["conover_holm_p"]
        conover.to_csv(out / f"conover_holm_{condition}.csv")
        parts.append(
            f"<h2>Models compared ({html.escape(condition)})</h2><p>Kruskal-Wallis on unit accuracies: "
            f"H = {result['kruskal_H']:.3g}, p = {result['kruskal_p']:.3g}. "
            "Conover post-hoc p-values, Holm-corrected:</p>" + conover.to_html(float_format=lambda v: f"{v:.3g}")
        )
    correlation = depth_correlation(units)
    correlation.to_csv(out / "depth_correlation.csv", index=False)
    parts.append(_table_html("Unit accuracy and relative layer depth (Spearman)", correlation))
    if models:
        facts = with_model_facts(responses, models)
        trends = scaling_trends(facts)
        trends.to_csv(out / "scaling.csv", index=False)
        if not trends.empty:
            _save(scaling_figure(facts, trends, chance), out, "scaling")
            verdicts = "".join(f"<li>{html.escape(scaling_sentence(r))}</li>" for r in trends.itertuples())
            parts.append(
                "<h2>Scaling trends</h2><p>Two-stage meta-regression: unit accuracies, their mean per model, then "
                "accuracy ~ predictor across models (t interval, models - 2 degrees of freedom); "
                f"slopes with 95% CIs and p-values:</p><ul>{verdicts}</ul>"
                "<img src='scaling.png' alt='accuracy against log10 parameters' style='max-width:100%'>"
                + trends.to_html(index=False, float_format=lambda v: f"{v:.3g}")
            )
            robust = robustness_checks(facts)
            robust.to_csv(out / "scaling_robustness.csv", index=False)
            parts.append(_table_html("Robustness checks on log10 parameters", robust))
    return "".join(parts)


def _machine_html(responses: pd.DataFrame, scores_csv: Path, out: Path) -> str:
    scores = load_machine_scores(scores_csv)
    units = human_and_machine_units(unit_accuracy(responses), scores)
    if units.empty:
        raise ResponseTableError(f"{scores_csv}: no unit of the responses has a machine score")
    units.to_csv(out / "machine_units.csv", index=False)
    models = human_and_machine_models(units)
    models.to_csv(out / "machine_models.csv", index=False)
    correlation = human_machine_correlation(units)
    correlation.to_csv(out / "machine_correlation.csv", index=False)
    _save(machine_figure(units, chance_level(responses)), out, "machine")
    observer = scores["observer"].iloc[0] if "observer" in scores else "an observer"
    return (
        "<h2>Machine score and human accuracy</h2>"
        f"<p>Machine score: the expected accuracy of {html.escape(str(observer))} on each unit's trials "
        f"({html.escape(str(scores_csv))}); human accuracy: the unit's proportion correct "
        "(machine_units.csv has every unit).</p>"
        "<img src='machine.png' alt='human unit accuracy against machine score' style='max-width:100%'>"
        + models.to_html(index=False, float_format=lambda v: f"{v:.3f}")
        + _table_html("Correlation of human accuracy with the machine score", correlation)
    )


EXCLUSION_MODES = ("ours", "published", "none")


def _exclusion_html(table: pd.DataFrame, criteria: ExclusionCriteria, mode: str, note: str = "") -> str:
    if mode == "none":
        return "<h2>Exclusions</h2><p>No exclusions applied.</p>"
    if table.empty:
        return f"<h2>Exclusions</h2><p>None: {html.escape(note)}.</p>" if note else ""
    unit = "session(s)" if "session_id" in table else "participant(s)"
    if mode == "published":
        flags = sorted({r for rules in table["failed_rules"] for r in rules.split(";") if r})
        counts = {flag: int(table["failed_rules"].str.contains(flag, regex=False).sum()) for flag in flags}
        items = "".join(
            f"<li>{html.escape(flag.removeprefix(PUBLISHED_RULE.format(column='')))} not as kept: {n}</li>"
            for flag, n in counts.items()
        )
        rules = f"<p>As published ({html.escape(note)}).</p><ul>{items}</ul>"
    else:
        counts = {rule: int(table["failed_rules"].str.contains(rule).sum()) for rule in RULES}
        items = "".join(f"<li>{html.escape(describe(rule, criteria))}: {n}</li>" for rule, n in counts.items())
        rules = f"<p>Our criteria, recomputed (a {unit[:-3]} may fail several rules):</p><ul>{items}</ul>"
    excluded = table[table["excluded"]]
    shown = [c for c in ("participant_id", "session_id", "failed_rules", "exclusion_reason") if c in table]
    listing = excluded[shown].to_html(index=False) if len(excluded) else "<p>none</p>"
    return f"<h2>Exclusions</h2><p>{len(excluded)} of {len(table)} {unit} excluded.</p>{rules}{listing}"


def _published_html(responses: pd.DataFrame, out: Path) -> str:
    """The published studies' own statistic (participant means ± 2 SEM), their breakdowns and repeats."""
    headline = participant_means(responses, ["model_id", "condition"])
    headline.to_csv(out / "participant_means.csv", index=False)
    parts = [
        "<h2>Mean over participants, ± 2 SEM</h2><p>Each participant's proportion correct on main trials, "
        "averaged over participants, with two standard errors of that mean: the statistic Borowski et al. (2021) "
        "report (participant_means.csv).</p>"
        + headline.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="")
    ]
    for name, table in breakdowns(responses).items():
        table.to_csv(out / f"breakdown_{name.replace('+', '_')}.csv", index=False)
        words = "; ".join(BREAKDOWN_COLUMNS[c] for c in name.split("+"))
        parts.append(_table_html(f"By {name.replace('+', ' × ')}", table, f"<p>{html.escape(words)}.</p>"))
    repeats = repeat_agreement(responses)
    if not repeats.empty:
        repeats.to_csv(out / "repeat_agreement.csv", index=False)
        overall = repeat_agreement(responses, ["model_id", "condition"])
        parts.append(
            _table_html(
                "Repeated trials: agreement with the first answer",
                pd.concat([repeats, overall.assign(instr_type="(all)")], ignore_index=True),
                "<p>Repeated trials are kept out of every accuracy above. Agreement: the share of repeats "
                "where the same query was chosen as at the first showing (repeat_agreement.csv).</p>",
            )
        )
    return "".join(parts)


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


def write_ratings_report(ratings: pd.DataFrame, out: Path, source: Path) -> Path:
    """Report for a rating table: mean rating per trial and participant group, with 95% t intervals."""
    out.mkdir(parents=True, exist_ok=True)
    summary = rating_summary(ratings)
    summary.to_csv(out / "ratings.csv", index=False)
    _save(rating_figure(summary, ratings), out, "ratings")
    fmt = FORMATS[ratings.attrs["format"]]
    page = out / "index.html"
    page.write_text(
        "<!doctype html><meta charset='utf-8'><title>psychinterp report: ratings</title>"
        "<h1>Ratings per trial and participant group</h1>"
        f"<p>{len(ratings)} ratings from {ratings['participant_id'].nunique()} participant(s): "
        f"{html.escape(fmt.title)}, source: {html.escape(str(source))}. "
        "Ratings run from -100 (not intuitive) to 100 (intuitive); "
        "intervals are 95% t intervals over participants (ratings.csv).</p>"
        "<img src='ratings.png' alt='ratings per trial' style='max-width:100%'>"
        + summary.to_html(index=False, float_format=lambda v: f"{v:.1f}", na_rep="")
    )
    return page


def write_report(
    responses_csv: Path,
    out: Path,
    n_resamples: int = 10_000,
    format: str | None = None,
    model_id: str = "googlenet",
    criteria: ExclusionCriteria | None = None,
    exclusions: str = "ours",
    models: dict | None = None,
    machine_scores: Path | None = None,
) -> Path:
    """The report: accuracy with intervals, model comparison, depth, scaling trends (given ``models``' facts),
    and machine scores next to human accuracy (given a machine-score CSV).

    ``exclusions``: ``ours`` recomputes our criteria where the table allows, ``published`` applies the
    source's own flags (the 2023 release's ``passed_checks`` / ``multi_participation``), ``none`` keeps all.
    A rating table (Borowski et al.'s intuitiveness files) gets its own report.
    """
    if exclusions not in EXCLUSION_MODES:
        raise ResponseTableError(f"exclusions {exclusions!r}: choose from {list(EXCLUSION_MODES)}")
    loaded = load_table(responses_csv, format=format, model_id=model_id)
    if loaded.attrs["kind"] == "ratings":
        return write_ratings_report(loaded, out, responses_csv)
    criteria = criteria or ExclusionCriteria()
    responses = as_responses(loaded)
    fmt = FORMATS[responses.attrs["format"]]
    note = ""
    if exclusions == "ours":
        included, excluded = apply_exclusions(responses, criteria)
    elif exclusions == "published":
        if fmt.published_keep is None:
            raise ResponseTableError(
                f"{responses_csv}: --exclusions published: {fmt.title} records no exclusions of its own; "
                "use --exclusions ours or none"
            )
        note = fmt.published_note
        try:
            included, excluded = published_exclusions(responses, fmt.published_keep)
        except ValueError as exc:
            raise ResponseTableError(f"{responses_csv}: --exclusions published: {exc}") from None
        if not fmt.published_keep:
            excluded = pd.DataFrame()
    else:
        included, excluded = responses, pd.DataFrame()
    if included.empty:
        raise ResponseTableError(f"{responses_csv}: no responses left to analyse after the exclusions")
    table = accuracy_table(included, n_resamples=n_resamples)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "accuracy.csv", index=False)
    counterfactual = ""
    if exclusions != "none":
        excluded.to_csv(out / "exclusions.csv", index=False)
    if exclusions == "ours":
        grid = counterfactual_grid(responses, criteria)
        grid.to_csv(out / "exclusion_thresholds.csv", index=False)
        if not grid.empty:
            _save(counterfactual_figure(grid), out, "exclusion_thresholds")
            counterfactual = (
                "<h2>If the thresholds were different</h2><p>Accuracy of the participants kept when one criterion "
                "moves and the others stay (dotted: the threshold used; exclusion_thresholds.csv has the numbers).</p>"
                "<img src='exclusion_thresholds.png' alt='accuracy over exclusion thresholds' style='max-width:100%'>"
            )
    _save(accuracy_figure(table, chance_level(included)), out, "accuracy")
    statistics = _published_html(included, out) + _statistics_html(included, out, models)
    if machine_scores is not None:
        statistics += _machine_html(included, machine_scores, out)
    page = out / "index.html"
    page.write_text(
        "<!doctype html><meta charset='utf-8'><title>psychinterp report</title>"
        "<h1>Accuracy per model and condition</h1>"
        f"<p>{len(included)} responses from {included['participant_id'].nunique()} participant(s) "
        f"({html.escape(fmt.title)}), source: {html.escape(str(responses_csv))}. Main trials only (catch, "
        "practice and repeated trials are left out). Intervals: 95% bootstrap (ci: participants and units "
        "resampled together; participant_ci: participants only; unit_bca: the 2023 study's BCa interval of the "
        "mean unit accuracy; blank when too few to resample).</p>"
        "<img src='accuracy.png' alt='accuracy per model and condition' style='max-width:100%'>"
        + table.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="")
        + statistics
        + _exclusion_html(excluded, criteria, exclusions, note)
        + counterfactual
    )
    return page
