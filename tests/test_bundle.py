import hashlib
import json
import shutil

import pytest

from stimuli.bundle import ANSWER_KEY, MANIFEST, BundleError, load_bundle
from stimuli.tasks import UnitStimuli, build_tasks


def test_built_bundle_is_valid_and_complete(tiny_bundle_dir):
    bundle = load_bundle(tiny_bundle_dir, verify_hashes=True)
    manifest = bundle.manifest
    assert manifest.study_id == "tiny"
    assert [m.id for m in manifest.models] == ["tiny_resnet18"]
    assert manifest.models[0].parameter_count == 11_689_512
    assert len(manifest.units) == 2
    trials = manifest.trials()
    assert len(trials) == 4  # 2 units x 2 conditions
    assert all(len(t.trials) == 2 for t in manifest.tasks)
    for trial in trials.values():
        assert len(trial.references.min) == len(trial.references.max) == 9
        answer = bundle.answer_key.answers[trial.trial_id]
        acts = answer.query_activations
        assert acts[answer.max_query] >= acts[1 - answer.max_query]
    natural = [r for r in manifest.reference_images if r.kind == "natural"]
    for unit in manifest.units:
        mine = [r for r in natural if r.unit_id == unit.unit_id]
        top = [r.activation for r in mine if r.direction == "max"]
        bottom = [r.activation for r in mine if r.direction == "min"]
        assert min(top) >= max(bottom)
        assert sorted(r.rank for r in mine if r.direction == "max") == list(range(1, 10))
    assert not (tiny_bundle_dir / ".work").exists()


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


def _stimuli(k: int) -> UnitStimuli:
    h = lambda s: hashlib.sha256(s.encode()).hexdigest()  # noqa: E731
    return UnitStimuli(
        unit_id=f"u{k}",
        natural_min=[h(f"nmin{k}")],
        natural_max=[h(f"nmax{k}")],
        synthetic_min=[h(f"smin{k}")],
        synthetic_max=[h(f"smax{k}")],
        max_query=h(f"qmax{k}"),
        min_query=h(f"qmin{k}"),
        max_query_activation=2.0,
        min_query_activation=-1.0,
        query_rank=2,
        max_query_source=f"max{k}.jpg",
        min_query_source=f"min{k}.jpg",
    )


def test_task_builder_is_seeded_and_keeps_the_answer_with_the_query():
    units = [_stimuli(k) for k in range(6)]
    tasks, answers = build_tasks(units, ["natural", "synthetic", "none"], trials_per_task=5, seed=3)
    assert (tasks, answers) == build_tasks(units, ["natural", "synthetic", "none"], trials_per_task=5, seed=3)
    trials = [t for task in tasks for t in task.trials]
    assert [len(t.trials) for t in tasks] == [5, 5, 5, 3]
    assert len({t.trial_id for t in trials}) == 18
    by_unit = {u.unit_id: u for u in units}
    for trial in trials:
        answer = answers[trial.trial_id]
        assert trial.queries[answer.max_query] == by_unit[trial.unit_id].max_query
        assert answer.query_activations[answer.max_query] == 2.0
        if trial.condition == "none":
            assert not trial.references.min and not trial.references.max
        else:
            assert trial.references.max[0] == getattr(by_unit[trial.unit_id], f"{trial.condition}_max")[0]
    assert {a.max_query for a in answers.values()} == {0, 1}
    assert {t.max_side for t in trials} == {"left", "right"}
