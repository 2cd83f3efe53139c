"""Resumable, shardable builds: kill and rerun, shard and merge, submitit jobs, reduced precision."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import write_tiny_study

MANIFEST = "manifest.json"


def _study(root: Path, units: int = 4, seed: int = 1) -> Path:
    """The tiny study with one unit per feature-visualisation batch, so there are several work items. With seed 1
    one of its units (layer2.0:49) is refused (its queries tie) and a reserve takes its place; seed 2 refuses none."""
    path = write_tiny_study(root, units=units, seed=seed)
    raw = yaml.safe_load(path.read_text())
    raw["feature_visualization"]["units_per_batch"] = 1
    raw["dataset"]["num_workers"] = 0
    path.write_text(yaml.safe_dump(raw))
    return path


def _build(study: Path, out: Path, **kwargs):
    from stimuli.build import build_study
    from stimuli.study import load_study_config

    return build_study(load_study_config(study), out, **kwargs)


def _reference(root: Path, seed: int) -> tuple[Path, bytes, bytes]:
    study = _study(root, seed=seed)
    out = root / "bundle"
    _build(study, out)
    return study, (out / MANIFEST).read_bytes(), (out / "answer_key.json").read_bytes()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, bytes, bytes]:
    """One uninterrupted, unsharded build with a replaced unit: (study config, manifest bytes, answer key bytes)."""
    return _reference(tmp_path_factory.mktemp("reference"), seed=1)


@pytest.fixture(scope="module")
def clean_reference(tmp_path_factory) -> tuple[Path, bytes, bytes]:
    """The same without a replaced unit, for tests that count the build's scans and visualisations."""
    return _reference(tmp_path_factory.mktemp("clean_reference"), seed=2)


def test_the_reference_build_replaced_a_unit(reference):
    """The tests that compare with this build (shards, jobs, kills, precision) also cover a replacement."""
    replaced = json.loads(reference[1])["replaced_units"]
    assert [(r["unit_id"], r["replaced_by"]) for r in replaced] == [
        ("tiny_resnet18__layer2.0__49", "tiny_resnet18__layer2.0__74")
    ]
    assert replaced[0]["problems"][0].startswith("tied queries")


class _Crash(Exception):
    pass


def _counting(monkeypatch, module, name: str, crash_on: int | None = None) -> list[int]:
    """Wrap ``module.name`` to count its calls, and raise on call number ``crash_on``."""
    original = getattr(module, name)
    calls: list[int] = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if crash_on is not None and len(calls) == crash_on:
            raise _Crash(f"{name} call {len(calls)}")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_crash_during_visualisation_resumes_without_redoing_finished_units(clean_reference, tmp_path, monkeypatch):
    from stimuli import build, fv

    study, manifest, answers = clean_reference
    out = tmp_path / "bundle"
    with monkeypatch.context() as patch:
        _counting(patch, fv, "visualise_units", crash_on=3)
        with pytest.raises(_Crash):
            _build(study, out)
    assert len(list((out / ".work" / "fv").glob("*.json"))) == 2  # the two finished units are recorded
    assert not (out / MANIFEST).exists()

    scans = _counting(monkeypatch, build, "scan_dataset")
    visualisations = _counting(monkeypatch, fv, "visualise_units")
    _build(study, out)
    assert scans == []  # every unit already had its exemplars
    assert len(visualisations) == 2  # only the two unfinished units
    assert (out / MANIFEST).read_bytes() == manifest
    assert (out / "answer_key.json").read_bytes() == answers


def test_crash_during_the_scan_resumes_from_its_checkpoint(clean_reference, tmp_path, monkeypatch):
    from stimuli import exemplars

    study, manifest, _ = clean_reference
    out = tmp_path / "bundle"
    with monkeypatch.context() as patch:
        _counting(patch, exemplars, "batch_activations", crash_on=2)
        with pytest.raises(_Crash):
            _build(study, out, checkpoint_seconds=0)
    progress = json.loads(next((out / ".work" / "scan").glob("*.progress.json")).read_text())
    assert progress["rows_done"] == 16  # the first batch of 16 images was checkpointed

    batches = _counting(monkeypatch, exemplars, "batch_activations")
    _build(study, out)
    n_images = progress["shape"][0]
    assert len(batches) == -(-(n_images - 16) // 16)  # only the batches after the checkpoint
    assert (out / MANIFEST).read_bytes() == manifest
    assert not list((out / ".work" / "scan").glob("*"))


def test_a_changed_config_does_not_reuse_old_work(reference, tmp_path):
    from contracts.errors import PsychinterpError

    study, _, _ = reference
    out = tmp_path / "bundle"
    _build(study, out)
    raw = yaml.safe_load(study.read_text())
    raw["seed"] = 2
    changed = study.parent / "changed.yaml"  # beside the original, so relative paths still resolve
    changed.write_text(yaml.safe_dump(raw))
    with pytest.raises(PsychinterpError, match=r"different study config.*delete"):
        _build(changed, out)


def test_another_paradigm_or_task_layout_reuses_the_units_work(reference, tmp_path, monkeypatch):
    """What only the assembly reads (tasks, paradigm, texts) changes no unit record: the build deals again."""
    import shutil

    from contracts.bundle import load_bundle
    from stimuli import build, fv

    study, manifest, _ = reference
    out = tmp_path / "bundle"
    shutil.copytree(study.parent / "bundle", out)
    raw = yaml.safe_load(study.read_text())
    raw |= {"title": "again", "paradigm": "odd_one_out", "odd_one_out": {"images": 3}}
    raw["feature_visualization"]["images_per_direction"] = 4  # 2 batches x 2 max images each
    changed = study.parent / "odd.yaml"
    changed.write_text(yaml.safe_dump(raw))
    scans, visualisations = _counting(monkeypatch, build, "scan_dataset"), _counting(monkeypatch, fv, "visualise_units")
    with pytest.raises(Exception, match="different study config"):
        _build(changed, out)  # more visualisations per direction: that is unit work, and it differs
    raw["feature_visualization"]["images_per_direction"] = yaml.safe_load(study.read_text())["feature_visualization"][
        "images_per_direction"
    ]
    raw["conditions"] = ["natural"]
    changed.write_text(yaml.safe_dump(raw))
    _build(changed, out)
    assert scans == [] and visualisations == []
    bundle = load_bundle(out)
    assert bundle.manifest.paradigm == "odd_one_out_3" and bundle.manifest.title == "again"
    assert (out / MANIFEST).read_bytes() != manifest


def test_shards_merged_in_place_or_from_their_own_folders_equal_one_build(reference, tmp_path):
    from contracts.errors import PsychinterpError
    from stimuli.build import Shard, merge_shards
    from stimuli.study import load_study_config

    study, manifest, answers = reference
    config = load_study_config(study)
    shared = tmp_path / "shared"
    assert _build(study, shared, shard=Shard(1, 3)) is None
    with pytest.raises(PsychinterpError, match=r"cannot assemble.*unit record\(s\) are missing.*remaining shards"):
        merge_shards(config, shared)
    _build(study, shared, shard=Shard(3, 3))
    _build(study, shared, shard=Shard(2, 3))
    merge_shards(config, shared)
    assert (shared / MANIFEST).read_bytes() == manifest
    assert (shared / "answer_key.json").read_bytes() == answers

    apart = [tmp_path / f"shard{i}" for i in (1, 2)]
    for i, folder in enumerate(apart, start=1):
        _build(study, folder, shard=Shard(i, 2))
    merged = tmp_path / "merged"
    merge_shards(config, merged, apart)
    assert (merged / MANIFEST).read_bytes() == manifest


def test_shard_argument_is_validated():
    from contracts.errors import ConfigError
    from stimuli.build import Shard, WorkItem

    for bad in ("0/2", "3/2", "1", "a/b", "1/0"):
        with pytest.raises(ConfigError, match="--shard"):
            Shard.parse(bad)
    items = [WorkItem("m", k, ()) for k in range(5)]
    shares = [Shard(i, 3).select(items) for i in (1, 2, 3)]
    assert [item for share in shares for item in share] == items
    assert [len(s) for s in shares] == [1, 2, 2]


@pytest.mark.slow
def test_jobs_through_submitit_local_executor_equal_one_build(reference, tmp_path):
    from stimuli.cluster import build_with_jobs
    from stimuli.study import load_study_config

    study, manifest, _ = reference
    out = tmp_path / "bundle"
    build_with_jobs(load_study_config(study), out, jobs=2, executor="local")
    assert (out / MANIFEST).read_bytes() == manifest
    assert len(list((out / ".work" / "jobs").glob("*/*_result.pkl"))) == 2


@pytest.mark.slow
def test_killed_build_process_finishes_on_rerun(reference, tmp_path):
    """SIGKILL a real `psychinterp build` during the scan, then during the visualisations; the rerun finishes."""
    study, manifest, _ = reference
    out = tmp_path / "bundle"
    command = [sys.executable, "-m", "psychinterp", "build", str(study), "--out", str(out)]
    for pattern in ("scan/*.progress.json", "fv/*.json"):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not list((out / ".work").glob(pattern)) and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert list((out / ".work").glob(pattern)), f"the build never reached {pattern}"
    assert not (out / MANIFEST).exists()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (out / MANIFEST).read_bytes() == manifest


@pytest.mark.slow
def test_reduced_precision_scan_chooses_the_fp32_exemplars(reference, tmp_path):
    study, _, _ = reference
    exact, reduced = tmp_path / "fp32", tmp_path / "bf16"
    _build(study, exact, precision="fp32")
    _build(study, reduced, precision="bf16")  # bf16 autocast also runs on CPU
    for record in sorted((exact / ".work" / "exemplars").glob("*.json")):
        a = json.loads(record.read_text())
        b = json.loads((reduced / ".work" / "exemplars" / record.name).read_text())
        assert a["max_side"] == b["max_side"] and a["min_side"] == b["min_side"]
        assert a["activations"].keys() == b["activations"].keys()
        np.testing.assert_allclose(list(a["activations"].values()), list(b["activations"].values()), rtol=1e-4)


def test_exact_at_used_ranks_repairs_every_rank_that_selection_reads():
    from stimuli.exemplars import exact_at_used_ranks, select_exemplars, used_rank_ranges

    rng = np.random.default_rng(0)
    exact = rng.normal(size=(5000, 3)).astype(np.float32)
    exact[rng.choice(5000, 40, replace=False)] = np.nan  # undecodable images
    noisy = (exact + rng.normal(scale=0.005, size=exact.shape)).astype(np.float32)
    assert select_exemplars(noisy[:, 0], 4, 9, "hard95") != select_exemplars(exact[:, 0], 4, 9, "hard95")
    for queries in ("easy", "extreme", "hard95"):
        approx = noisy.copy()
        ranges = used_rank_ranges(int(np.count_nonzero(~np.isnan(exact[:, 0]))), 4, 9, queries)
        seen: list[int] = []

        def rescore(rows, seen=seen):
            seen.extend(rows.tolist())
            return exact[rows]

        n = exact_at_used_ranks(approx, ranges, rescore)
        assert n == len(seen) == len(set(seen)) < 700  # only images near the used ranks
        for j in range(3):
            assert select_exemplars(approx[:, j], 4, 9, queries) == select_exemplars(exact[:, j], 4, 9, queries)


def test_dataset_from_a_file_list(tmp_path):
    from contracts.errors import ConfigError
    from stimuli.demo.images import write_demo_dataset
    from stimuli.exemplars import ImageTreeDataset

    root = write_demo_dataset(tmp_path / "images", images_per_class=2)
    tree = ImageTreeDataset(root)
    listing = tmp_path / "val.txt"
    listing.write_text("# ImageNet-style list\n" + "\n".join(f"images/{p.as_posix()}" for p in tree.paths[:5]) + "\n")
    listed = ImageTreeDataset(listing)
    assert len(listed) == 5 and listed.paths[0] == Path("images") / tree.paths[0]
    assert listed[0][1].shape == (3, 224, 224)
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(ConfigError, match=r"empty.txt: lists no image paths"):
        ImageTreeDataset(tmp_path / "empty.txt")
    (tmp_path / "list.csv").write_text("a.jpg\n")
    with pytest.raises(ConfigError, match=r"list.csv: a file list must end in"):
        ImageTreeDataset(tmp_path / "list.csv")
