"""Task folders of the 2023 study, read as its page (mturk/2afc/task.js) reads them."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contracts.bundle import load_bundle
from stimuli.imi_import import ImiFormatError, import_imi_tasks, reference_names

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "imi-2afc-task-folders"
RELEASED = ("demo_natural_9_references", "demo_optimized_9_references", "screenshots_9_references")
needs_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason="shared/reference/imi-2afc-task-folders is not beside this checkout"
)


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)


def make_task(root: Path, name: str, n_refs, max_indices, min_indices, trials=(1, 2), n_trials=None, **index) -> Path:
    """A task folder with the quirks of the 2023 release; pixel values say which file an image came from."""
    folder = root / name
    folder.mkdir(parents=True)
    index = {"task_name": name, "n_reference_images": n_refs, "n_trials": n_trials or len(trials), **index}
    (folder / "index.json").write_text(json.dumps(index))
    for k in trials:
        base = folder / "trials" / f"trial_{k}"
        _png(base / "queries" / "max.png", 240 + k)
        _png(base / "queries" / "min.png", 10 + k)
        for i in max_indices:
            _png(base / "references" / f"max_{i}.png", 100 + 10 * k + i)
        for i in min_indices:
            _png(base / "references" / f"min_{i}.png", 20 + 10 * k + i)
    return folder


def _pixel(bundle, sha: str) -> int:
    return int(np.asarray(Image.open(bundle.image_path(sha)))[0, 0, 0])


def test_references_are_the_ones_the_page_shows(tmp_path):
    source = tmp_path / "release"
    # 10 per side on disk, n_reference_images "3" (a string): the page shows max_8, max_7, max_6.
    make_task(source, "natural_task", "3", range(10), range(10), trials=(1, 2, 10), n_trials=2)
    imported = import_imi_tasks(source / "natural_task", tmp_path / "bundle", study_id="imi", seed=1)
    bundle = imported.bundle
    assert load_bundle(tmp_path / "bundle", verify_hashes=True) == bundle
    trial = bundle.manifest.tasks[0].trials[0]
    assert [_pixel(bundle, s) for s in trial.references.max] == [118, 117, 116]
    assert [_pixel(bundle, s) for s in trial.references.min] == [38, 37, 36]
    assert [t.trial_id.split("__")[1] for t in bundle.manifest.tasks[0].trials] == ["trial_1", "trial_2"]
    assert any("trial_10" in note and "ignored" in note for note in imported.notes)
    assert reference_names(9, "max")[0] == "max_8.png" and reference_names(9, "min", legacy=True)[-1] == "min_1.png"


def test_a_missing_reference_is_named_and_the_earlier_numbering_used(tmp_path):
    # max_0..max_8 and min_1..min_9: the demo folders' layout.
    make_task(tmp_path / "release", "natural_demo", "9", range(9), range(1, 10))
    imported = import_imi_tasks(tmp_path / "release", tmp_path / "bundle", study_id="imi")
    assert len(imported.notes) == 2 and "min_0.png missing" in imported.notes[0]
    trial = imported.bundle.manifest.tasks[0].trials[0]
    assert [_pixel(imported.bundle, s) for s in trial.references.min] == [20 + 10 + i for i in range(9, 0, -1)]
    assert len(trial.references.max) == 9


def test_queries_answers_and_conditions(tmp_path):
    source = tmp_path / "release"
    make_task(source, "a_natural_task", 3, range(10), range(10))
    make_task(source, "b_optimized_task", 3, range(10), range(10))
    make_task(source, "c_mystery", 3, range(10), range(10))
    with pytest.raises(ImiFormatError, match="c_mystery: cannot tell the condition from its name; pass --condition"):
        import_imi_tasks(source, tmp_path / "bundle", study_id="imi")
    bundle = import_imi_tasks(source, tmp_path / "bundle", study_id="imi", condition="natural").bundle
    assert [t.condition for t in bundle.manifest.tasks] == ["natural", "synthetic", "natural"]  # names win
    positions = set()
    for trial in (t for task in bundle.manifest.tasks for t in task.trials):
        answer = bundle.answer_key.answers[trial.trial_id]
        positions.add(answer.max_query)
        assert _pixel(bundle, trial.queries[answer.max_query]) >= 240
        assert answer.query_sources[answer.max_query].endswith("queries/max.png") and trial.max_side == "right"
    assert positions == {0, 1}  # the correct query is not always in the same place


def test_a_namespace_with_its_demo_folder_gets_practice_trials(tmp_path):
    source = tmp_path / "experiment"
    for k in (1, 2):
        make_task(source / "resnet50_natural", f"task_{k}", 9, range(10), range(10), trials=(1, 2, 3))
    make_task(source, "demo_resnet50_natural", 9, range(10), range(10), trials=(1, 2, 3, 4, 5))
    bundle = import_imi_tasks(source, tmp_path / "bundle", study_id="imi").bundle
    assert [t.task_id for t in bundle.manifest.tasks] == ["task_1", "task_2"]
    assert len(bundle.manifest.practice_trials) == 5
    assert {t.kind for t in bundle.manifest.practice_trials} == {"practice"}
    from experiment_server import create_app
    from tests.server_helpers import start

    client = create_app(
        {"bundle_dir": tmp_path / "bundle", "database_url": f"sqlite:///{tmp_path / 'db'}"}
    ).test_client()
    assert start(client)["practice_trials"] == 5


def test_catch_trials_from_the_index(tmp_path):
    folder = make_task(tmp_path / "release", "natural_x", 3, range(10), range(10), catch_trial_idxs=[1, 2])
    for name in ("max", "min"):  # trial 1's queries are also shown as references: a real catch trial
        (folder / f"trials/trial_1/references/{name}_7.png").write_bytes(
            (folder / f"trials/trial_1/queries/{name}.png").read_bytes()
        )
    imported = import_imi_tasks(folder, tmp_path / "bundle", study_id="imi")
    assert [t.kind for t in imported.bundle.manifest.tasks[0].trials] == ["catch", "main"]
    assert any("trial_2: listed in catch_trial_idxs" in note for note in imported.notes)


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda f: (f / "index.json").write_text("{"), "index.json: not valid JSON"),
        (lambda f: (f / "index.json").write_text('{"n_reference_images": "nine", "n_trials": 2}'), "'nine' is not a"),
        (
            lambda f: (f / "index.json").write_text('{"n_reference_images": 3}'),
            "no n_trials; the study's page needs it",
        ),
        (lambda f: (f / "index.json").write_text('{"n_reference_images": 12, "n_trials": 2}'), "shows at most 9"),
        (lambda f: (f / "trials/trial_1/queries/max.png").unlink(), "trial_1/queries/max.png: missing query image"),
        (lambda f: (f / "trials/trial_2/references/max_7.png").unlink(), r"max_7.png missing; the study's page shows"),
        (lambda f: (f / "trials/trial_2/references/max_8.png").write_bytes(b"x"), "max_8.png: not a readable image"),
        (lambda f: __import__("shutil").rmtree(f / "trials/trial_2"), "no trial_2 folder, but index.json says"),
    ],
)
def test_broken_folders_name_the_file(tmp_path, breakage, message):
    folder = make_task(tmp_path / "release", "natural_x", 3, range(10), range(10))
    breakage(folder)
    with pytest.raises(ImiFormatError, match=message):
        import_imi_tasks(tmp_path / "release", tmp_path / "bundle", study_id="imi")
    assert not (tmp_path / "bundle" / "manifest.json").exists()


@needs_reference
@pytest.mark.parametrize("name", RELEASED)
def test_the_released_folders_import_and_serve(tmp_path, name):
    from experiment_server import create_app
    from tests.server_helpers import start

    imported = import_imi_tasks(REFERENCE / name, tmp_path / "bundle", study_id="imi", condition="natural")
    trials = imported.bundle.manifest.tasks[0].trials
    assert len(trials) == 2 and all(len(t.references.max) == len(t.references.min) == 9 for t in trials)
    # Only the demo folders' and trial_1's min side lack min_0.
    expected_notes = {"demo_natural_9_references": 2, "demo_optimized_9_references": 0, "screenshots_9_references": 1}
    assert len(imported.notes) == expected_notes[name] and all("min_0.png missing" in n for n in imported.notes)
    client = create_app(
        {"bundle_dir": tmp_path / "bundle", "database_url": f"sqlite:///{tmp_path / 'db'}"}
    ).test_client()
    token = start(client)["token"]
    payload = client.get(f"/api/sessions/{token}/trials/0").get_json()
    assert "max.png" not in json.dumps(payload) and len(payload["references"]["max"]) == 9


@needs_reference
def test_the_released_parent_folder_imports_all_three(tmp_path):
    imported = import_imi_tasks(REFERENCE, tmp_path / "bundle", study_id="imi", condition="natural")
    tasks = imported.bundle.manifest.tasks
    assert [(t.task_id, t.condition) for t in tasks] == [
        ("demo_natural_9_references", "natural"),
        ("demo_optimized_9_references", "synthetic"),
        ("screenshots_9_references/task_1", "natural"),
    ]
