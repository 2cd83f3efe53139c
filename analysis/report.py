"""``psychinterp analyze``: tables, a figure and an HTML page."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.estimate import accuracy_table  # noqa: E402
from analysis.exclusions import RULES, ExclusionCriteria, apply_exclusions, describe  # noqa: E402
from analysis.load import ResponseTableError, load_responses  # noqa: E402


def accuracy_figure(table: pd.DataFrame) -> plt.Figure:
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
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(x, models, rotation=30, ha="right")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("proportion correct")
    ax.legend(frameon=False, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def _exclusion_html(table: pd.DataFrame, criteria: ExclusionCriteria) -> str:
    if table.empty:
        return ""
    counts = {rule: int(table["failed_rules"].str.contains(rule).sum()) for rule in RULES}
    items = "".join(f"<li>{html.escape(describe(rule, criteria))}: {n}</li>" for rule, n in counts.items())
    excluded = table[table["excluded"]]
    listing = excluded[["participant_id", "failed_rules"]].to_html(index=False) if len(excluded) else "<p>none</p>"
    return (
        f"<h2>Exclusions</h2><p>{len(excluded)} of {len(table)} participant(s) excluded "
        f"(a participant may fail several rules):</p><ul>{items}</ul>{listing}"
    )


def write_report(
    responses_csv: Path,
    out: Path,
    n_resamples: int = 10_000,
    format: str | None = None,
    model_id: str = "googlenet",
    criteria: ExclusionCriteria | None = None,
    exclude: bool = True,
) -> Path:
    criteria = criteria or ExclusionCriteria()
    responses = load_responses(responses_csv, format=format, model_id=model_id)
    included, exclusions = apply_exclusions(responses, criteria) if exclude else (responses, pd.DataFrame())
    if included.empty:
        raise ResponseTableError(f"{responses_csv}: no responses left to analyse after the exclusions")
    table = accuracy_table(included, n_resamples=n_resamples)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "accuracy.csv", index=False)
    if exclude:
        exclusions.to_csv(out / "exclusions.csv", index=False)
    fig = accuracy_figure(table)
    for suffix in ("png", "pdf"):
        fig.savefig(out / f"accuracy.{suffix}", dpi=150)
    plt.close(fig)
    page = out / "index.html"
    page.write_text(
        "<!doctype html><meta charset='utf-8'><title>psychinterp report</title>"
        "<h1>Accuracy per model and condition</h1>"
        f"<p>{len(included)} responses from {included['participant_id'].nunique()} participant(s) "
        f"({responses.attrs.get('format', 'psychinterp')} format), "
        f"source: {html.escape(str(responses_csv))}. Intervals: 95% bootstrap over participants "
        "(blank when fewer than two participants).</p>"
        "<img src='accuracy.png' alt='accuracy per model and condition' style='max-width:100%'>"
        + table.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="")
        + (_exclusion_html(exclusions, criteria) if exclude else "<p>No exclusions applied.</p>")
    )
    return page
