"""`psychinterp build` on real registry architectures (random weights saved to local files)."""

from __future__ import annotations

import pytest
import torch
import yaml

from tests.test_registry import _checkpoint_as_users_have_it

MODELS = ["googlenet", "vit_b32", "resnet50", "clip_resnet50"]  # lucent, timm (tokens), torchvision, open_clip


@pytest.mark.slow
def test_build_gives_a_valid_bundle_for_registry_architectures(tmp_path):
    from typer.testing import CliRunner

    from contracts.bundle import load_bundle
    from psychinterp.cli import app
    from stimuli.demo.images import write_demo_dataset
    from stimuli.registry import build_architecture
    from stimuli.specs import load_model_specs

    specs = load_model_specs()
    weights = []
    for model_id in MODELS:
        torch.manual_seed(0)
        path = tmp_path / f"{model_id}.pt"
        torch.save(_checkpoint_as_users_have_it(specs[model_id], build_architecture(specs[model_id])), path)
        weights += ["--weights", f"{model_id}={path}"]
    write_demo_dataset(tmp_path / "images", images_per_class=5)
    study = {
        "study_id": "registry",
        "models": MODELS,
        "units_per_model": 3,
        "unit_sampling": {"shared_units": [["resnet50", "clip_resnet50"]]},
        "dataset": {"path": "images", "batch_size": 10, "num_workers": 1},
        "exemplars": {"batches": 1},
        "feature_visualization": {
            "image_size": 96,  # InceptionV1's pooling needs more than 32 px
            "padding": 4,
            "max_steps": 3,
            "min_steps": 2,
            "images_per_direction": 2,
            "units_per_batch": 3,
        },
        "tasks": {"trials_per_task": 3, "catch_trials_per_task": 1, "practice_trials": 0},
        # Three steps on random weights beat nothing: the visualisations are shown as they are.
        "acceptance": {"min_beating": 0, "max_path_outliers": 1, "min_pixel_sd": 0},
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    out = tmp_path / "bundle"
    result = CliRunner().invoke(app, ["build", str(tmp_path / "study.yaml"), "--out", str(out), *weights])
    assert result.exit_code == 0, result.output
    manifest = load_bundle(out, verify_hashes=True).manifest
    assert [m.id for m in manifest.models] == MODELS
    by_model = {m: [u for u in manifest.units if u.model_id == m] for m in MODELS}
    assert all(len(units) == 3 for units in by_model.values())
    # shared_units: the same units, except where one model's unit was refused and replaced there only.
    replaced = {r.replaced_by for r in manifest.replaced_units}
    pairs = zip(by_model["resnet50"], by_model["clip_resnet50"], strict=True)
    for a, b in pairs:
        assert (a.layer, a.selector) == (b.layer, b.selector) or {a.unit_id, b.unit_id} & replaced
    assert all(u.layer.startswith("blocks.") for u in by_model["vit_b32"])
    synthetic = [r for r in manifest.reference_images if r.kind == "synthetic"]
    assert len(synthetic) == 4 * 3 * 2 * 2  # models x units x directions x images
    assert {t.model_id for t in manifest.tasks} == set(MODELS)
