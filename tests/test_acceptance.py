"""Units whose stimuli cannot teach anything never reach a participant: retried, replaced, recorded, or an error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from stimuli.acceptance import (
    AcceptanceConfig,
    exemplar_problems,
    pixel_sd,
    retry_can_help,
    visualisation_problems,
)
from stimuli.units import SampledUnit, reserve_units, sample_units


def _image(direction: str, beats: bool = True, outlier: bool = False, sd: float = 40.0) -> dict:
    return {"direction": direction, "beats_exemplars": beats, "path_outlier": outlier, "pixel_sd": sd}


def test_the_rules_name_each_problem_with_its_numbers():
    rules = AcceptanceConfig()
    good = [_image(d) for d in ("max", "min") for _ in range(9)]
    assert visualisation_problems(good, rules) == []
    flat = [_image(d, beats=False, sd=0.7) for d in ("max", "min") for _ in range(9)]
    problems = visualisation_problems(flat, rules)
    assert "max side: 9 of 9 images are flat (pixel SD 0.7 < 2)" in problems
    assert "min side: 0 of 9 images beat the most extreme exemplar (at least 10% must)" in problems
    assert retry_can_help(problems)
    half = [_image("max", beats=k < 4) for k in range(9)] + [_image("min", outlier=k < 5) for k in range(9)]
    assert visualisation_problems(half, rules) == [
        "min side: 5 of 9 images flagged by the path sanity check (at most 50% may be)",
    ]
    assert not retry_can_help(visualisation_problems(half, rules))  # the unit's own path: replace it
    assert visualisation_problems(half, AcceptanceConfig(min_beating=0.5, max_path_outliers=0.6)) == [
        "max side: 4 of 9 images beat the most extreme exemplar (at least 50% must)",
    ]
    assert exemplar_problems((1.5, -2.0), [(1.0, -1.0)]) == []
    assert exemplar_problems((0.25, 0.25), [(0.25, 0.25)])[0].startswith("dead: the same activation (0.25)")
    assert exemplar_problems((1.0, 0.0), [(0.5, 0.0), (0.0, 0.0)]) == [
        "tied queries: in batch(es) [1] the max query does not activate the unit more than the min query"
    ]
    assert pixel_sd(np.full((8, 8, 3), 128, np.uint8)) == 0
    assert pixel_sd(np.tile(np.array([0, 255], np.uint8)[:, None, None], (4, 8, 3))) == pytest.approx(127.5)


def test_reserves_are_other_rows_of_the_layer_and_never_shared():
    layers = [("a", 16), ("b", 8)]
    planned = sample_units("m", layers, 6, seed=3)
    chains = {u.unit_id: reserve_units(planned, u, range(dict(layers)[u.layer]), seed=3, n=3) for u in planned}
    used = {(u.layer, u.selector.channel) for u in planned}
    reserves = [(r.layer, r.selector.channel) for chain in chains.values() for r in chain]
    assert len(reserves) == len(set(reserves)) and not set(reserves) & used
    for unit in planned:
        assert all(r.layer == unit.layer and r.model_id == "m" for r in chains[unit.unit_id])
    # The same units in another model of a shared_units group get the same reserves.
    other = [u.for_model("m2") for u in planned]
    again = reserve_units(other, other[0], range(dict(layers)[other[0].layer]), seed=3, n=3)
    assert [r.selector for r in again] == [r.selector for r in chains[planned[0].unit_id]]
    # A layer whose channels are all planned has no reserve.
    full = [SampledUnit(model_id="m", layer="c", selector={"kind": "channel", "channel": 0}, layer_index=0, n_layers=1)]
    assert reserve_units(full, full[0], range(1), seed=0, n=3) == []


SHAPESNET = {
    "id": "net",
    "display_name": "ShapesNet-XS (random, tests)",
    "source": "psychinterp",
    "constructor": "shapesnet",
    "constructor_kwargs": {"widths": [8, 16, 32], "blocks": 1},
    "preprocessing": {"resize": 64, "crop": 64, "mean": [0.5] * 3, "std": [0.25] * 3},
    "layers": {"include": ["stages.*.*.norm"]},
    "metadata": {"train_images": 1000},
}


def _dead_unit_study(root: Path, **study) -> tuple[Path, dict]:
    """A random ShapesNet-XS study in which the first planned unit is dead (its norm's weight is 0, so its
    output is the bias on every image); returns the config and the dead unit's plan entry."""
    import torch

    from stimuli.build import plan_units
    from stimuli.demo.images import write_demo_dataset
    from stimuli.exemplars import ImageTreeDataset
    from stimuli.registry import build_architecture
    from stimuli.specs import ModelSpec
    from stimuli.study import load_study_config

    write_demo_dataset(root / "images", images_per_class=10)
    torch.manual_seed(0)
    model = build_architecture(ModelSpec.model_validate(SHAPESNET))
    (root / "models.yaml").write_text(yaml.safe_dump({"models": [{**SHAPESNET, "weights_file": "net.pt"}]}))
    config = {
        "study_id": "dead",
        "models_file": "models.yaml",
        "models": ["net"],
        "units_per_model": 3,
        "dataset": {"path": "images", "batch_size": 32, "num_workers": 0},
        "exemplars": {"batches": 2, "references": 9},
        "feature_visualization": {
            "image_size": 32,
            "padding": 2,
            "max_steps": 16,
            "min_steps": 8,
            "lr": 0.2,
            "images_per_direction": 3,
        },
        "conditions": ["natural", "synthetic"],
        "tasks": {"trials_per_task": 2, "catch_trials_per_task": 1, "practice_trials": 1},
        "seed": 0,
        **study,
    }
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    torch.save(model.state_dict(), root / "net.pt")  # the plan needs no weights; they must exist to build
    loaded = load_study_config(path)
    plan = plan_units(loaded, root / "bundle", ImageTreeDataset(loaded.dataset.path))
    dead = plan.units["net"][0]
    with torch.no_grad():
        norm = model.get_submodule(dead.layer)
        norm.weight[dead.selector.channel] = 0.0
    torch.save(model.state_dict(), root / "net.pt")
    return path, dead.model_dump(mode="json")


@pytest.mark.slow
def test_a_planted_dead_unit_is_replaced_and_recorded(tmp_path):
    from contracts.bundle import load_bundle
    from stimuli.build import build_study
    from stimuli.study import load_study_config

    lenient = {"min_beating": 0, "max_path_outliers": 1, "min_pixel_sd": 0}  # the live units' short runs stay
    path, dead = _dead_unit_study(tmp_path, acceptance=lenient)
    bundle = build_study(load_study_config(path), tmp_path / "bundle")
    dead_id = SampledUnit.model_validate(dead).unit_id

    replaced = bundle.manifest.replaced_units
    assert [r.unit_id for r in replaced] == [dead_id]
    assert replaced[0].problems[0].startswith("dead: the same activation")
    successor = replaced[0].replaced_by
    shown = {u.unit_id for u in bundle.manifest.units}
    assert successor in shown and dead_id not in shown and len(shown) == 3
    assert successor.rsplit("__", 1)[0] == dead_id.rsplit("__", 1)[0]  # same model and layer
    assert all(t.unit_id != dead_id for t in bundle.manifest.all_trials())
    assert all(r.unit_id != dead_id for r in bundle.manifest.reference_images)
    # A dead unit's visualisations are never made (no retry can help); its reserve's are.
    assert not (tmp_path / "bundle" / ".work" / "fv" / f"{dead_id}.json").exists()
    assert any(r.unit_id == successor and r.kind == "synthetic" for r in bundle.manifest.reference_images)
    verdict = json.loads((tmp_path / "bundle" / ".work" / "verdicts" / f"{dead_id}.json").read_text())
    assert verdict["accepted"] is False and verdict["replaced_by"]["selector"] != dead["selector"]
    assert load_bundle(tmp_path / "bundle").manifest == bundle.manifest

    # The report counts it per model; the units index lists it with its reason; its reserve's page says so.
    from analysis.report import write_report
    from psychinterp.workflows import simulate_study

    simulate_study(tmp_path / "bundle", 3, "pixel", out=tmp_path / "responses.csv")
    page = write_report(tmp_path / "responses.csv", tmp_path / "report", bundle=tmp_path / "bundle", exclusions="none")
    text = page.read_text()
    assert "Units the build replaced" in text and "<title>dead · psychinterp report</title>" in text
    index = (tmp_path / "report" / "units" / "index.html").read_text()
    assert "Replaced units" in index and "dead: the same activation" in index
    assert f'href="{successor}.html"' in index
    reserve_page = (tmp_path / "report" / "units" / f"{successor}.html").read_text()
    assert f"took the place of {dead_id} (dead: the same activation" in reserve_page


@pytest.mark.slow
def test_strict_acceptance_stops_with_the_unit_and_its_problems(tmp_path):
    from contracts.errors import PsychinterpError
    from stimuli.build import build_study
    from stimuli.study import load_study_config

    path, dead = _dead_unit_study(tmp_path, acceptance={"on_failure": "stop"}, conditions=["natural"])
    dead_id = SampledUnit.model_validate(dead).unit_id
    with pytest.raises(PsychinterpError, match=rf"unit {dead_id}: .*dead: .*on_failure: stop; set it to replace"):
        build_study(load_study_config(path), tmp_path / "bundle")


@pytest.mark.slow
def test_visualisations_that_stay_flat_are_retried_then_their_unit_is_replaced(tmp_path):
    """No visualisation can meet an impossible flatness floor: each unit is retried once (with the method's retry
    settings and a seed of its own), then its reserves are tried in turn, and a place left without any stays
    empty; the manifest says so unit by unit."""
    from contracts.errors import PsychinterpError
    from stimuli.build import build_study
    from stimuli.study import load_study_config

    rules = {"min_beating": 0, "max_path_outliers": 1, "min_pixel_sd": 1000, "replacements": 1}
    path, _ = _dead_unit_study(tmp_path, acceptance=rules)
    with pytest.raises(PsychinterpError, match=r"model net: 0 of its 3 planned units passed.*6 refused.*3 places"):
        build_study(load_study_config(path), tmp_path / "bundle")
    work = tmp_path / "bundle" / ".work"
    verdicts = [json.loads(p.read_text()) for p in sorted((work / "verdicts").glob("*.json"))]
    assert len(verdicts) == 6 and not any(v["accepted"] for v in verdicts)  # 3 planned units and a reserve each
    assert sum(v["replaced_by"] is None for v in verdicts) == 3  # each place's one reserve failed too
    records = [json.loads(p.read_text())["images"] for p in (work / "fv").glob("*.json")]
    assert len(records) == 5  # the dead unit has none
    for images in records:
        assert {image["fv_retry"]["attempt"] for image in images} == {1}
        assert all(image["fv_retry"]["init_sd"] == pytest.approx(0.1) for image in images)
