"""Shared fixtures: a tiny study bundle built through the real pipeline, and a server app."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

# Under pytest-xdist (make test runs one worker per core) each worker's torch gets its share of the
# cores rather than all of them; read by torch when it is first imported, after this file.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT") and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first (a stable sort), so that the workers' last tests are short ones."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


TINY_MODEL = {
    "id": "tiny_resnet18",
    "display_name": "ResNet-18 (random init, tests)",
    "source": "torchvision",
    "constructor": "resnet18",
    "layers": {"include": ["layer1.*", "layer2.*"]},
    "metadata": {"train_images": 1000},
}


def write_tiny_study(
    root: Path,
    conditions=("natural", "synthetic"),
    units: int = 2,
    batches: int = 2,
    images_per_class: int = 12,
    practice_trials: int = 1,
    **overrides,
) -> Path:
    """Dataset, random weights saved to a file, models file and study config under ``root``.

    ``overrides`` replace top-level fields of the study config (e.g. ``paradigm``), or are merged
    into those that are mappings."""
    import torch

    from stimuli.demo.images import write_demo_dataset
    from stimuli.registry import build_architecture
    from stimuli.specs import ModelSpec

    write_demo_dataset(root / "images", images_per_class=images_per_class)
    torch.manual_seed(0)
    weights = root / "tiny.pt"
    torch.save(build_architecture(ModelSpec.model_validate(TINY_MODEL)).state_dict(), weights)
    (root / "models.yaml").write_text(yaml.safe_dump({"models": [{**TINY_MODEL, "weights_file": "tiny.pt"}]}))
    study = {
        "study_id": "tiny",
        "models_file": "models.yaml",
        "models": ["tiny_resnet18"],
        "units_per_model": units,
        "dataset": {"path": "images", "batch_size": 16},
        "exemplars": {"batches": batches, "references": 9},  # the last batch is practice's alone
        "feature_visualization": {
            "max_steps": 4,
            "min_steps": 2,
            "image_size": 32,
            "padding": 4,
            "images_per_direction": 3,
        },
        # Four steps cannot beat anything: the visualisations are near-grey, and the server tests need them shown.
        "acceptance": {"min_beating": 0, "max_path_outliers": 1, "min_pixel_sd": 0},
        "conditions": list(conditions),
        "tasks": {"trials_per_task": 2, "catch_trials_per_task": 1, "practice_trials": practice_trials},
        "seed": 1,
    }
    for field, value in overrides.items():
        study[field] = {**study[field], **value} if isinstance(study.get(field), dict) else value
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.fixture
def browser():
    """Headless Debian chromium through Playwright (the browser tests skip where it is missing)."""
    from playwright.sync_api import sync_playwright

    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where browser tests save full-page screenshots for a person to look at: $PSYCHINTERP_SCREENSHOTS,
    else .artifacts/screenshots in the checkout (ignored by git)."""
    folder = Path(
        os.environ.get("PSYCHINTERP_SCREENSHOTS") or Path(__file__).parent.parent / ".artifacts" / "screenshots"
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def tiny_bundle_dir(tmp_path_factory) -> Path:
    from stimuli.build import build_study
    from stimuli.study import load_study_config

    root = tmp_path_factory.mktemp("tiny_study")
    out = root / "bundle"
    build_study(load_study_config(write_tiny_study(root)), out)
    return out


ODD_ONE_OUT_STUDY = {
    "paradigm": "odd_one_out",
    "odd_one_out": {"images": 4},
    "feature_visualization": {"images_per_direction": 6},
    "units": 3,
}


@pytest.fixture(scope="session")
def tiny_odd_bundle_dir(tmp_path_factory) -> Path:
    """The tiny study in the odd-one-out paradigm: 4 images a trial, natural and synthetic."""
    from stimuli.build import build_study
    from stimuli.study import load_study_config

    root = tmp_path_factory.mktemp("tiny_odd_study")
    out = root / "bundle"
    build_study(load_study_config(write_tiny_study(root, **ODD_ONE_OUT_STUDY)), out)
    return out


@pytest.fixture
def app(tiny_bundle_dir, tmp_path):
    from experiment_server import create_app
    from tests.server_helpers import SCRIPTED_CRITERIA

    # Scripted participants answer in milliseconds: the server's minimum times would fail them all.
    return create_app(
        {
            "bundle_dir": tiny_bundle_dir,
            "database_url": f"sqlite:///{tmp_path / 'test.db'}",
            "criteria": SCRIPTED_CRITERIA,
        }
    )


@pytest.fixture
def client(app):
    return app.test_client()
