"""Installed from a built wheel, not a checkout: models list, build (default models file), serve, analyze.

The wheel is built from a copy of the source tree and installed, without dependencies, into a
fresh virtual environment; the dependencies come from this environment's site-packages through
a path file, which does not run this environment's editable-install hook. Commands run from an
empty folder, so nothing of the checkout can be imported by accident.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import httpx
import pytest
import torch
import yaml

from tests.server_helpers import free_port, wait_until_serving

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("contracts", "stimuli", "experiment_server", "analysis", "psychinterp")

pytestmark = pytest.mark.slow


def _run(args: list, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the fresh environment's bin folder, an empty working folder)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    dist = root / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", dist, source], cwd=root)
    wheel = next(dist.glob("psychinterp-*.whl"))
    env = root / "venv"
    venv.create(env, with_pip=True)
    bin_dir = env / "bin"
    _run([bin_dir / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], cwd=root)
    purelib = Path(
        _run([bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], root).stdout.strip()
    )
    (purelib / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    work = root / "work"
    work.mkdir()
    return bin_dir, work


def test_the_packages_come_from_the_wheel(installed):
    bin_dir, work = installed
    found = _run(
        [bin_dir / "python", "-c", "import stimuli, analysis; print(stimuli.__file__, analysis.__file__)"], work
    )
    assert all(str(bin_dir.parent) in path for path in found.stdout.split()), found.stdout
    assert str(ROOT) not in found.stdout


def test_models_list_from_the_packaged_models_file_prints_no_warnings(installed):
    bin_dir, work = installed
    result = _run([bin_dir / "psychinterp", "models", "list"], work)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 10 and "25,557,032" in next(line for line in lines if line.startswith("resnet50 "))
    assert result.stderr == "", result.stderr


def test_build_serve_and_analyze_from_the_wheel(installed, tmp_path):
    bin_dir, work = installed
    from stimuli.demo.images import write_demo_dataset
    from stimuli.registry import build_architecture
    from stimuli.specs import load_model_specs

    write_demo_dataset(tmp_path / "images", images_per_class=8)
    torch.manual_seed(0)
    weights = tmp_path / "resnet50.pt"
    torch.save(build_architecture(load_model_specs()["resnet50"]).state_dict(), weights)
    study = {  # no models_file: the default one, from the installed package
        "study_id": "wheel",
        "models": ["resnet50"],
        "units_per_model": 2,
        "dataset": {"path": str(tmp_path / "images"), "batch_size": 16},
        "exemplars": {"batches": 1, "references": 9},
        "conditions": ["natural"],
        "tasks": {"trials_per_task": 2, "catch_trials_per_task": 1, "practice_trials": 0},
        "seed": 0,
    }
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study))
    bundle = tmp_path / "bundle"
    built = _run([bin_dir / "psychinterp", "build", config, "--out", bundle, "--weights", f"resnet50={weights}"], work)
    assert "2 units" in built.stdout

    port = free_port()
    db = f"sqlite:///{tmp_path / 'wheel.db'}"
    server = subprocess.Popen(
        [bin_dir / "psychinterp", "serve", bundle, "--db", db, "--port", str(port)],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        wait_until_serving(client, seconds=60)
        page = client.get("/")
        assert page.status_code == 200 and "app.js" in page.text
        assert client.get("/static/app.js").status_code == 200  # package data: templates and static files
    finally:
        server.terminate()
        server.wait(timeout=10)

    fixture = (
        ROOT / "tests/fixtures/published/borowski/experiment_I_main_practice_catch_repeated_trials_preprocessed.csv"
    )
    report = tmp_path / "report"
    _run([bin_dir / "psychinterp", "analyze", fixture, "--out", report, "--resamples", "100"], work)
    assert (report / "index.html").exists() and (report / "participant_means.csv").exists()
