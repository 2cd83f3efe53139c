"""How people did on each unit, from a response table, for the unit microscope.

The views of a bundle's units (what participants saw) are :mod:`contracts.microscope`'s, shared with
the server's live pages; this module adds the human side from the analysis's included responses.
"""

from __future__ import annotations

import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from contracts.microscope import HumanResult, human_result


def human_results(responses: pd.DataFrame, machine: pd.DataFrame | None = None) -> dict[str, list[HumanResult]]:
    """Per unit and condition: accuracy with its Wilson 95% interval (each participant answers a unit
    about once, so its responses are nearly independent), confidence counts and the RT histogram."""
    main = responses[responses["trial_kind"] == "main"] if "trial_kind" in responses else responses
    scores = {}
    if machine is not None:
        scores = {(r.unit_id, r.condition): float(r.machine_score) for r in machine.itertuples()}
    out: dict[str, list[HumanResult]] = {}
    for (unit_id, condition), rows in main.groupby(["unit_id", "condition"], sort=True):
        rt = rows["rt_ms"].tolist() if "rt_ms" in rows else []
        out.setdefault(unit_id, []).append(
            human_result(
                condition,
                rows["correct"].astype(bool).tolist(),
                rows["confidence"].tolist(),
                rt,
                rows["participant_id"].tolist(),
                proportion_confint(int(rows["correct"].sum()), len(rows), alpha=0.05, method="wilson"),
                scores.get((unit_id, condition)),
            )
        )
    return out
