import hashlib
import json
import math
import shutil
from collections import Counter
from pathlib import Path

import pytest

from contracts.bundle import ANSWER_KEY, MANIFEST, BundleError, load_bundle
from contracts.errors import PsychinterpError
from stimuli.tasks import BatchImages, QueryImage, UnitStimuli, assemble_tasks, plan_study


def test_built_bundle_is_valid_and_complete(tiny_bundle_dir):
    bundle = load_bundle(tiny_bundle_dir, verify_hashes=True)
    manifest = bundle.manifest
    assert manifest.study_id == "tiny"
    assert [m.id for m in manifest.models] == ["tiny_resnet18"]
    assert manifest.models[0].parameter_count == 11_689_512
    assert len(manifest.units) == 2
    trials = manifest.trials()
    assert len(manifest.tasks) == 2  # one per condition: 2 units, 2 trials per task
    assert all(len(t.trials) == 3 for t in manifest.tasks)  # 2 main + 1 catch
    assert [t.kind for t in manifest.practice_trials] == ["practice", "practice"]
    assert len(trials) == 8
    for trial in trials.values():
        expected = 9 if trial.condition == "natural" else 3  # images_per_direction in the tiny study
        assert len(trial.references.min) == len(trial.references.max) == expected
        answer = bundle.answer_key.answers[trial.trial_id]
        acts = answer.query_activations
        assert acts[answer.max_query] >= acts[1 - answer.max_query]
    natural = [r for r in manifest.reference_images if r.kind == "natural"]
    for unit in manifest.units:
        mine = [r for r in natural if r.unit_id == unit.unit_id]
        top = [r.activation for r in mine if r.direction == "max"]
        bottom = [r.activation for r in mine if r.direction == "min"]
        assert min(top) >= max(bottom)
        assert sorted(r.rank for r in mine if r.direction == "max") == list(range(1, 19))  # 2 batches x 9
    # Only the small completion records stay; the activation arrays are gone.
    assert not list((tiny_bundle_dir / ".work").rglob("*.npy"))
    # One record per planned unit and per reserve (scanned in the same pass: 3 a place by default).
    records = {p.stem for p in (tiny_bundle_dir / ".work" / "exemplars").glob("*.json")}
    assert {u.unit_id for u in manifest.units} <= records and len(records) == 2 * (1 + 3)


def test_manifest_sent_to_the_server_holds_no_answers(tiny_bundle_dir):
    text = (tiny_bundle_dir / MANIFEST).read_text()
    assert "max_query" not in text and "query_activations" not in text


@pytest.fixture
def bundle_copy(tiny_bundle_dir, tmp_path):
    return shutil.copytree(tiny_bundle_dir, tmp_path / "bundle")


def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_malformed_manifest_names_file_and_field(bundle_copy):
    _edit(bundle_copy / MANIFEST, lambda d: d["tasks"][0]["trials"][0].update(max_side="top"))
    with pytest.raises(BundleError) as err:
        load_bundle(bundle_copy)
    assert str(bundle_copy / MANIFEST) in str(err.value)
    assert "tasks[0](id=" not in str(err.value)  # tasks have task_id, not id
    assert "tasks[0].trials[0].max_side" in str(err.value)


def test_missing_image_and_missing_answer_are_reported(bundle_copy):
    manifest = json.loads((bundle_copy / MANIFEST).read_text())
    first_query = manifest["tasks"][0]["trials"][0]["queries"][0]
    (bundle_copy / "images" / f"{first_query}.png").unlink()
    with pytest.raises(BundleError, match=f"image {first_query} is referenced but .* is missing"):
        load_bundle(bundle_copy)


def test_answer_key_must_cover_every_trial(bundle_copy):
    trial_id = json.loads((bundle_copy / MANIFEST).read_text())["tasks"][0]["trials"][0]["trial_id"]
    _edit(bundle_copy / ANSWER_KEY, lambda d: d["answers"].pop(trial_id))
    with pytest.raises(BundleError, match=rf"{ANSWER_KEY}: answers: no entry for trial\(s\) \['{trial_id}'\]"):
        load_bundle(bundle_copy)


def test_tampered_image_fails_hash_verification(bundle_copy):
    image = next((bundle_copy / "images").iterdir())
    image.write_bytes(b"changed")
    assert hashlib.sha256(b"changed").hexdigest() != image.stem
    with pytest.raises(BundleError, match="content does not match its name"):
        load_bundle(bundle_copy, verify_hashes=True)


def test_not_json_and_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "nothing")
    (tmp_path / MANIFEST).write_text("{")
    with pytest.raises(BundleError, match="manifest.json: not valid JSON"):
        load_bundle(tmp_path)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _stimuli(unit: str, batches: int) -> UnitStimuli:
    def batch(b: int) -> BatchImages:
        return BatchImages(
            natural_min=tuple(_hash(f"{unit}nmin{b}{i}") for i in range(3)),
            natural_max=tuple(_hash(f"{unit}nmax{b}{i}") for i in range(3)),
            natural_min_activations=(-3.0, -2.5, -2.0),
            natural_max_activations=(5.0, 4.5, 4.0),
            queries={
                "max": QueryImage(_hash(f"{unit}qmax{b}"), 2.0, 4, f"{unit}max{b}.jpg"),
                "min": QueryImage(_hash(f"{unit}qmin{b}"), -1.0, 4, f"{unit}min{b}.jpg"),
            },
        )

    return UnitStimuli(
        unit_id=unit,
        batches={b: batch(b) for b in range(batches)},
        synthetic_min=tuple(_hash(f"{unit}smin{i}") for i in range(3)),
        synthetic_max=tuple(_hash(f"{unit}smax{i}") for i in range(3)),
        synthetic_min_activations=(-9.0, -9.0, -9.0),
        synthetic_max_activations=(9.0, 9.0, 9.0),
    )


UNITS = {"m1": [f"m1_u{k}" for k in range(10)], "m2": [f"m2_u{k}" for k in range(10)]}


def _plan(seed=3, **overrides):
    options = dict(repetitions=4, trials_per_task=5, catch_trials_per_task=2, batches=3, practice_units=["m1_u0"])
    return plan_study(UNITS, ["natural", "synthetic", "none"], seed=seed, **{**options, **overrides})


def test_dealing_balances_units_and_cycles_batches():
    plan = _plan()
    assert plan == _plan() and plan != _plan(seed=4)
    for condition in ("natural", "synthetic", "none"):
        for model, units in UNITS.items():
            tasks = [t for t in plan.tasks if t.condition == condition and t.model_id == model]
            assert len(tasks) == 8  # 10 units x 4 repetitions / 5 trials
            main = [[t for t in task.trials if t.kind == "main"] for task in tasks]
            assert all(len(m) == 5 for m in main)
            for trials in main:
                assert len({t.unit_id for t in trials}) == len(trials)  # at most once per task
            counts = Counter(t.unit_id for trials in main for t in trials)
            assert set(counts) == set(units) and set(counts.values()) == {4}  # equally often
            for unit in units:
                batches = sorted(t.batch for trials in main for t in trials if t.unit_id == unit)
                assert batches == [0, 0, 1, 2]  # batches cycle over repetitions
            catch = [[t for t in task.trials if t.kind == "catch"] for task in tasks]
            expected = 0 if condition == "none" else 2
            assert all(len(c) == expected for c in catch)
            for task_main, task_catch in zip(main, catch, strict=True):
                assert not {t.unit_id for t in task_catch} & {t.unit_id for t in task_main}
    assert {c: [t.unit_id for t in ts] for c, ts in plan.practice.items()} == {
        "natural": ["m1_u0"],
        "synthetic": ["m1_u0"],
        "none": ["m1_u0"],
    }


def test_a_unit_cannot_repeat_within_a_task():
    with pytest.raises(PsychinterpError, match="would appear twice in one task"):
        plan_study({"m": ["a", "b"]}, ["natural"], repetitions=2, trials_per_task=3, catch_trials_per_task=0, batches=1)


def test_assembled_trials_keep_the_answer_with_the_query():
    plan = _plan()
    stimuli = {u: _stimuli(u, 3) for units in UNITS.values() for u in units}
    tasks, practice, answers = assemble_tasks(plan, stimuli, seed=3)
    assert (tasks, practice, answers) == assemble_tasks(plan, stimuli, seed=3)
    trials = [t for task in tasks for t in task.trials] + practice
    assert len(answers) == len(trials) == len({t.trial_id for t in trials})
    for trial in trials:
        answer = answers[trial.trial_id]
        stim = stimuli[trial.unit_id]
        images = stim.batches[trial.batch]
        max_q, min_q = trial.queries[answer.max_query], trial.queries[1 - answer.max_query]
        if trial.kind == "catch":
            assert max_q in trial.references.max and min_q in trial.references.min
        else:
            assert (max_q, min_q) == (images.queries["max"].sha256, images.queries["min"].sha256)
        assert answer.query_activations[answer.max_query] > answer.query_activations[1 - answer.max_query]
        if trial.condition == "none":
            assert not trial.references.min and not trial.references.max
        elif trial.condition == "natural":
            assert tuple(trial.references.max) == images.natural_max
        else:
            assert tuple(trial.references.max) == stim.synthetic_max
    for task in tasks:
        sides = Counter(t.max_side for t in task.trials)
        assert abs(sides["left"] - sides["right"]) <= 1  # counterbalanced within each task
    assert {a.max_query for a in answers.values()} == {0, 1}
    right_only, _, _ = assemble_tasks(plan, stimuli, max_side="right", seed=3)
    assert {t.max_side for task in right_only for t in task.trials} == {"right"}


def test_same_config_and_seed_give_a_byte_identical_manifest(tiny_bundle_dir, tmp_path):
    from stimuli.build import build_study
    from stimuli.study import load_study_config

    study = tiny_bundle_dir.parent / "study.yaml"
    build_study(load_study_config(study), tmp_path / "again")
    assert (tmp_path / "again" / MANIFEST).read_bytes() == (tiny_bundle_dir / MANIFEST).read_bytes()
    assert (tmp_path / "again" / ANSWER_KEY).read_bytes() == (tiny_bundle_dir / ANSWER_KEY).read_bytes()


def _equal_to_float32(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7)
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal_to_float32(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_equal_to_float32, a, b))
    return a == b


def _without_practice(document: dict) -> dict:
    if "practice_trials" in document:
        return {**document, "practice_trials": []}
    return {**document, "answers": {k: v for k, v in document["answers"].items() if not k.startswith("practice__")}}


def test_version_one_bundles_are_upgraded_and_the_build_is_unchanged(tmp_path):
    """tests/fixtures/bundle_v1/ was written by the schema-1 builder (commit 19ae5dd) from this config and seed:
    today's build gives the same content, with the schema's version 2 fields, and the old files still load.

    That config had one batch and a practice trial, which the builder now refuses (a main trial repeated
    the practice trial); the build here leaves practice out and is compared with the golden files' rest."""
    from contracts.bundle import SCHEMA_VERSION, AnswerKey, Manifest, upgrade
    from stimuli.build import build_study
    from stimuli.study import load_study_config
    from tests.conftest import write_tiny_study

    golden = Path(__file__).parent / "fixtures" / "bundle_v1"
    config = write_tiny_study(tmp_path, conditions=("natural",), batches=1, images_per_class=8, practice_trials=0)
    build_study(load_study_config(config), tmp_path / "b")
    for name, model in ((MANIFEST, Manifest), (ANSWER_KEY, AnswerKey)):
        old = _without_practice(json.loads((golden / name).read_text()))
        new = json.loads((tmp_path / "b" / name).read_text())
        assert old["schema_version"] == 1 and new["schema_version"] == SCHEMA_VERSION == 2
        # Activations may differ in the last float32 bit on another CPU (its kernels sum in another
        # order); everything else, images and choices included, is equal. Fields added since read
        # as their defaults.
        assert _equal_to_float32(model.model_validate(upgrade(old)).model_dump(mode="json"), new)
    units = json.loads((tmp_path / "b" / MANIFEST).read_text())["units"]
    assert all(u["selector"]["kind"] == "channel" and "channel" not in u for u in units)
    current = load_bundle(tmp_path / "b")
    for name in (MANIFEST, ANSWER_KEY):
        shutil.copy(golden / name, tmp_path / "b" / name)
    # The files differ (version 1 and 2), and so do their fingerprints; the content is the same.
    upgraded = load_bundle(tmp_path / "b", verify_hashes=True).model_dump(mode="json", exclude={"fingerprint"})
    upgraded = {**upgraded, "manifest": _without_practice(upgraded["manifest"])}
    upgraded["answer_key"] = _without_practice(upgraded["answer_key"])
    assert _equal_to_float32(upgraded, current.model_dump(mode="json", exclude={"fingerprint"}))


def test_stored_images_all_carry_one_constant_mtime(tmp_path):
    """The builder writes a trial's max query just before its min query: file times must not show it."""
    from contracts.bundle import IMAGE_MTIME, write_image_bytes

    shas = [write_image_bytes(tmp_path, bytes([i]) * 10) for i in range(3)]
    assert {(tmp_path / "images" / f"{s}.png").stat().st_mtime for s in shas} == {IMAGE_MTIME}
