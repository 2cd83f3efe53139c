import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stimuli.bundle import load_bundle
from stimuli.imi_import import ImiFormatError, import_imi_tasks

SHARED_DEMO = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "imi-2afc-demo"


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)


def make_task(root: Path, name: str, n_refs, max_indices, min_indices, trials=(1, 2), n_trials=None) -> Path:
    """A task folder with the quirks of the 2023 release."""
    folder = root / name
    folder.mkdir(parents=True)
    index = {"task_name": name, "n_reference_images": n_refs, "n_trials": n_trials or len(trials)}
    (folder / "index.json").write_text(json.dumps(index))
    for k in trials:
        base = folder / "trials" / f"trial_{k}"
        _png(base / "queries" / "max.png", 200 + k)
        _png(base / "queries" / "min.png", 10 + k)
        for i in max_indices:
            _png(base / "references" / f"max_{i}.png", 100 + 10 * k + i)
        for i in min_indices:
            _png(base / "references" / f"min_{i}.png", 50 + 10 * k + i)
    return folder


def test_imports_what_is_there(tmp_path):
    source = tmp_path / "release"
    # string count, trials from 1, max_0..max_2 but min_1..min_3
    make_task(source, "natural_task_2", "3", range(0, 3), range(1, 4), trials=(1, 2, 10))
    make_task(source, "optimized_task_10", 3, range(0, 3), range(0, 3))
    bundle = import_imi_tasks(source, tmp_path / "bundle", study_id="imi", seed=1)
    assert load_bundle(tmp_path / "bundle", verify_hashes=True) == bundle
    tasks = bundle.manifest.tasks
    assert [t.task_id for t in tasks] == ["natural_task_2", "optimized_task_10"]  # natural order
    assert [t.condition for t in tasks] == ["natural", "synthetic"]
    assert [t.trial_id.split("__")[1] for t in tasks[0].trials] == ["trial_1", "trial_2", "trial_10"]
    positions = set()
    for trial in (t for task in tasks for t in task.trials):
        answer = bundle.answer_key.answers[trial.trial_id]
        positions.add(answer.max_query)
        assert answer.query_sources[answer.max_query].endswith("queries/max.png")
        assert trial.max_side == "right" and len(trial.references.max) == len(trial.references.min) == 3
    assert positions == {0, 1}  # the correct query is not always in the same place
    # most extreme (highest index) first
    first = tasks[0].trials[0]
    pixel = np.asarray(Image.open(bundle.image_path(first.references.min[0])))[0, 0, 0]
    assert pixel == 50 + 10 + 3


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda f: (f / "index.json").write_text("{"), "index.json: not valid JSON"),
        (lambda f: (f / "index.json").write_text('{"n_reference_images": "nine"}'), "'nine' is not a whole number"),
        (lambda f: (f / "trials/trial_1/queries/max.png").unlink(), "trial_1/queries/max.png: missing query image"),
        (lambda f: (f / "trials/trial_2/references/min_1.png").unlink(), "found 3 max and 2 min references"),
        (lambda f: (f / "trials/trial_2/references/max_1.png").write_bytes(b"x"), "max_1.png: not a readable image"),
    ],
)
def test_broken_folders_name_the_file(tmp_path, breakage, message):
    folder = make_task(tmp_path / "release", "natural_x", 3, range(3), range(3))
    breakage(folder)
    with pytest.raises(ImiFormatError, match=message):
        import_imi_tasks(tmp_path / "release", tmp_path / "bundle", study_id="imi")
    assert not (tmp_path / "bundle" / "manifest.json").exists()


def test_unknown_condition_asks_for_it(tmp_path):
    make_task(tmp_path / "release", "mystery", 3, range(3), range(3))
    with pytest.raises(ImiFormatError, match="pass --condition"):
        import_imi_tasks(tmp_path / "release", tmp_path / "bundle", study_id="imi")
    bundle = import_imi_tasks(tmp_path / "release", tmp_path / "bundle", study_id="imi", condition="natural")
    assert bundle.manifest.conditions == ["natural"]


@pytest.mark.skipif(not SHARED_DEMO.is_dir(), reason="shared/reference/imi-2afc-demo is not beside this checkout")
def test_the_released_demo_folder_imports_and_serves(tmp_path):
    from experiment_server import create_app

    bundle = import_imi_tasks(SHARED_DEMO, tmp_path / "bundle", study_id="demo")
    trials = bundle.manifest.tasks[0].trials
    assert len(trials) == 2 and all(len(t.references.max) == 9 for t in trials)
    client = create_app(
        {"bundle_dir": tmp_path / "bundle", "database_url": f"sqlite:///{tmp_path / 'db'}"}
    ).test_client()
    from tests.server_helpers import start

    token = start(client)["token"]
    payload = client.get(f"/api/sessions/{token}/trials/0").get_json()
    assert "max.png" not in json.dumps(payload) and len(payload["references"]["max"]) == 9
