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


def write_report(responses_csv: Path, out: Path, n_resamples: int = 10_000) -> Path:
    responses = load_responses(responses_csv)
    if responses.empty:
        raise ResponseTableError(f"{responses_csv}: no responses to analyse")
    table = accuracy_table(responses, n_resamples=n_resamples)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "accuracy.csv", index=False)
    fig = accuracy_figure(table)
    for suffix in ("png", "pdf"):
        fig.savefig(out / f"accuracy.{suffix}", dpi=150)
    plt.close(fig)
    page = out / "index.html"
    page.write_text(
        "<!doctype html><meta charset='utf-8'><title>psychinterp report</title>"
        "<h1>Accuracy per model and condition</h1>"
        f"<p>{len(responses)} responses from {responses['participant_id'].nunique()} participant(s), "
        f"source: {html.escape(str(responses_csv))}. Intervals: 95% bootstrap over participants "
        "(blank when fewer than two participants).</p>"
        "<img src='accuracy.png' alt='accuracy per model and condition' style='max-width:100%'>"
        + table.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="")
    )
    return page
