import csv
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from psychinterp.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["models", "list"],
        ["build"],
        ["merge"],
        ["serve"],
        ["admin", "set-password"],
        ["db", "upgrade"],
        ["export"],
        ["analyze"],
        ["power"],
        ["simulate"],
        ["train-family"],
        ["demo"],
    ],
)
def test_every_subcommand_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.mark.slow
def test_models_list_prints_the_nine_models_with_parameter_counts():
    result = subprocess.run(
        [sys.executable, "-m", "psychinterp", "models", "list"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 10
    assert "25,557,032" in next(line for line in lines if line.startswith("resnet50 "))
    assert "88,224,232" in next(line for line in lines if line.startswith("vit_b32 "))


def test_train_family_registers_the_trained_models(tmp_path):
    out = tmp_path / "family"
    args = ["train-family", "--out", str(out), "--train-per-class", "2", "--pool-per-class", "1", "--epochs", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("trained shapesnet_") == 4 and "models.yaml" in result.output
    assert len(list((out / "shapes" / "pool").rglob("*.jpg"))) == 12
    listed = runner.invoke(app, ["models", "list", "--models", str(out / "models.yaml")])
    assert listed.exit_code == 0, listed.output
    counts = [int(line.split()[-3].replace(",", "")) for line in listed.output.splitlines()[1:]]
    assert len(counts) == 4 and counts == sorted(counts)
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "trained" not in again.output.replace("registered", "")
    bad = runner.invoke(app, [*args[:3], "--epochs", "0"])
    assert bad.exit_code == 2 and "greater than or equal to 1" in bad.output


def test_build_export_analyze_from_the_command_line(tmp_path, tiny_bundle_dir):
    from tests.conftest import write_tiny_study

    study = write_tiny_study(tmp_path / "study", conditions=("natural",), units=2)
    out = tmp_path / "bundle"
    result = runner.invoke(app, ["build", str(study), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 units" in result.output and (out / "manifest.json").exists()

    db = f"sqlite:///{tmp_path / 'cli.db'}"
    from experiment_server import create_app
    from psychinterp.scripted import run_session

    client = create_app({"bundle_dir": out, "database_url": db}).test_client()
    run_session(client, lambda trial: (1, 3), stop_after=1)
    csv_path = tmp_path / "responses.csv"
    result = runner.invoke(app, ["export", str(out), "--db", db, "--out", str(csv_path)])
    assert result.exit_code == 0, result.output
    rows = [r for r in csv.DictReader(csv_path.open()) if r["trial_kind"] != "practice"]
    assert len(rows) == 1 and rows[0]["chosen_query"] == "1" and rows[0]["confidence"] == "3"

    report = ["--out", str(tmp_path / "report"), "--resamples", "200"]
    result = runner.invoke(app, ["analyze", str(csv_path), *report])
    # One answer, then gone: the message counts the sessions each rule excluded.
    message = str(result.exception)
    assert "no responses left to analyse after the exclusions: 1 of 1 sessions excluded (" in message
    assert "1 incomplete" in message and "--criteria FILE.yaml" in message
    result = runner.invoke(app, ["analyze", str(csv_path), *report, "--exclusions", "none"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["analyze", "--db", db, "--bundle", str(out), *report, "--exclusions", "none"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report" / "index.html").exists()


def test_errors_name_the_file_without_a_traceback(tmp_path):
    bad = tmp_path / "study.yaml"
    bad.write_text("study_id: x\n")
    result = subprocess.run(
        [sys.executable, "-m", "psychinterp", "build", str(bad), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {bad}: ")
    assert "Traceback" not in result.stderr
    result = runner.invoke(app, ["build", str(bad), "--out", str(tmp_path / "o"), "--weights", "nonsense"])
    assert result.exit_code != 0 and "MODEL_ID=PATH" in result.output


def test_serve_with_a_config_file_admin_login_and_db_upgrade(tmp_path, tiny_bundle_dir):
    import httpx
    import yaml

    from psychinterp.scripted import run_session
    from tests.server_helpers import free_port, wait_until_serving

    db = f"sqlite:///{tmp_path / 'served.db'}"
    upgraded = runner.invoke(app, ["db", "upgrade", "--db", db])
    assert upgraded.exit_code == 0 and "was empty" in upgraded.output
    added = runner.invoke(app, ["admin", "set-password", "ada", "--db", db, "--password", "a long passphrase"])
    assert added.exit_code == 0 and "created admin 'ada'" in added.output
    short = runner.invoke(app, ["admin", "set-password", "bob", "--db", db, "--password", "short"])
    assert short.exit_code != 0

    config = tmp_path / "server.yaml"
    config.write_text(yaml.safe_dump({"prolific": {"completion_code": "DONE42", "failed_code": "FAIL42"}}))
    port = free_port()
    command = [sys.executable, "-m", "psychinterp", "serve", str(tiny_bundle_dir), "--db", db]
    server = subprocess.Popen([*command, "--config", str(config), "--port", str(port)], stderr=subprocess.PIPE)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        wait_until_serving(client)
        done = run_session(client, lambda trial: (0, 2), platform={"platform": "prolific", "participant_id": "e" * 24})
        assert done["completion_code"] in ("DONE42", "FAIL42")
        assert client.get("/admin/").status_code == 302
        # waitress itself refuses a body over the app's limit
        huge = client.post("/api/sessions", content=b" " * 300_000, headers={"Content-Type": "application/json"})
        assert huge.status_code == 413
    finally:
        server.terminate()
        server.wait(timeout=10)

    bad = tmp_path / "bad.yaml"
    bad.write_text("reservation_minutes: -1\n")
    result = subprocess.run([*command, "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.startswith(f"error: {bad}: ")
    assert "reservation_minutes" in result.stderr and "Traceback" not in result.stderr


def test_serve_warns_when_other_machines_can_reach_it():
    from psychinterp.serving import is_loopback

    assert [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "192.168.1.5", "study.org")] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]


def test_simulate_refuses_an_impossible_option_pair_before_running_anything(tiny_bundle_dir, tmp_path):
    # Nothing listens on port 9: had it started sessions first, this would fail on the connection instead.
    args = ["simulate", str(tiny_bundle_dir), "--server", "http://127.0.0.1:9", "--out", str(tmp_path / "r.csv")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--out needs the in-process server" in result.output
    result = runner.invoke(app, [*args[:4], "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert result.exit_code == 2 and "--db is for the in-process server" in result.output


def test_build_refuses_a_shard_and_jobs_together_before_reading_anything(tmp_path):
    from contracts.errors import ConfigError

    args = ["build", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "b"), "--shard", "1/2", "--jobs", "2"]
    result = runner.invoke(app, args)
    assert isinstance(result.exception, ConfigError) and "not both" in str(result.exception)
    assert not (tmp_path / "b").exists()
