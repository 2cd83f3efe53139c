"""Machine observers: decisions from images, through the HTTP API and offline."""

from __future__ import annotations

import numpy as np
import pytest

from contracts.bundle import load_bundle
from psychinterp.observers import PixelStatistics, SimilarityObserver, machine_scores, make_observer


def solid(rgb):
    return np.full((32, 32, 3), rgb, dtype=np.uint8)


def test_similarity_observer_prefers_the_query_that_looks_like_the_max_references():
    observer = SimilarityObserver(PixelStatistics(), temperature=50, lapse=0.0, rng=np.random.default_rng(0))
    reds = [solid((200 + i, 20, 20)) for i in range(3)]
    blues = [solid((20, 20, 200 + i)) for i in range(3)]
    p, margin = observer.choice_probabilities([solid((210, 30, 30)), solid((30, 30, 210))], reds, blues)
    assert p[0] > 0.99 and margin > 0 and p.sum() == pytest.approx(1)
    p, _ = observer.choice_probabilities([solid((30, 30, 210)), solid((210, 30, 30))], reds, blues)
    assert p[0] < 0.01
    p, margin = observer.choice_probabilities([solid(0), solid(1)], [], [])  # the 'none' condition: a coin
    assert list(p) == [0.5, 0.5] and margin == 0.0
    lapsing = SimilarityObserver(PixelStatistics(), temperature=50, lapse=0.2)
    p, _ = lapsing.choice_probabilities([solid((210, 30, 30)), solid((30, 30, 210))], reds, blues)
    assert p[0] == pytest.approx(0.9, abs=1e-3)
    # Three queries: the max-like one wins, the lapse spreads evenly, and the choice follows the probabilities.
    three = [solid((30, 30, 210)), solid((210, 30, 30)), solid((120, 20, 120))]
    p, _ = lapsing.choice_probabilities(three, reds, blues)
    assert p.argmax() == 1 and p.min() >= 0.2 / 3 - 1e-9 and p.sum() == pytest.approx(1)


def test_observers_take_the_study_through_the_api_and_score_units_offline(tiny_bundle_dir, tmp_path):
    from typer.testing import CliRunner

    from psychinterp.cli import app

    out, scores = tmp_path / "responses.csv", tmp_path / "scores.csv"
    args = ["simulate", str(tiny_bundle_dir), "--participants", "3", "--db", f"sqlite:///{tmp_path / 's.db'}"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--scores", str(scores)])
    assert result.exit_code == 0, result.output
    assert "3 pixel observer(s)" in result.output and out.read_text().count("\n") > 3
    import pandas as pd

    table = pd.read_csv(scores)
    bundle = load_bundle(tiny_bundle_dir)
    assert set(table["unit_id"]) == {u.unit_id for u in bundle.manifest.units}
    assert table["machine_score"].between(0, 1).all() and (table["observer"] == "pixel").all()
    direct = machine_scores(bundle, tiny_bundle_dir, make_observer("pixel"))
    assert np.allclose(direct["machine_score"], table["machine_score"])

    report = tmp_path / "report"
    args = ["analyze", str(out), "--out", str(report), "--exclusions", "none", "--resamples", "100"]
    result = CliRunner().invoke(app, [*args, "--machine-scores", str(scores)])
    assert result.exit_code == 0, result.output
    assert "Machine score and human accuracy" in (report / "index.html").read_text()
    assert set(pd.read_csv(report / "machine_units.csv")["unit_id"]) == set(table["unit_id"])


def test_model_embedding_observer_and_bad_specs(tmp_path):
    import torch
    import yaml

    from contracts.errors import PsychinterpError
    from stimuli.registry import build_architecture
    from stimuli.specs import ModelSpec
    from tests.conftest import TINY_MODEL

    torch.manual_seed(0)
    torch.save(build_architecture(ModelSpec.model_validate(TINY_MODEL)).state_dict(), tmp_path / "w.pt")
    (tmp_path / "models.yaml").write_text(yaml.safe_dump({"models": [{**TINY_MODEL, "weights_file": "w.pt"}]}))
    from psychinterp.observers import ModelEmbedding

    features = ModelEmbedding("tiny_resnet18", models_file=tmp_path / "models.yaml")
    assert features.name == "tiny_resnet18:layer2.1"
    assert features.embed([solid((10, 200, 30)), solid((200, 10, 30))]).shape == (2, 128)
    with pytest.raises(PsychinterpError, match="use pixel, model:ID"):
        make_observer("telepathy")


@pytest.mark.parametrize("paced", [True, False], ids=["no-minimum-times", "default-criteria"])
def test_simulate_fills_a_running_server_over_http(tiny_bundle_dir, tmp_path, paced):
    import threading

    from typer.testing import CliRunner
    from werkzeug.serving import make_server

    from experiment_server import create_app
    from experiment_server.db import ParticipantSession, Response
    from psychinterp.cli import app
    from tests.server_helpers import SCRIPTED_CRITERIA

    # Machine observers answer at once: a server with minimum times fails them all (as it should).
    config = {"bundle_dir": tiny_bundle_dir, "database_url": f"sqlite:///{tmp_path / 'live.db'}"}
    server_app = create_app({**config, **({"criteria": SCRIPTED_CRITERIA} if paced else {})})
    server = make_server("127.0.0.1", 0, server_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        args = ["simulate", str(tiny_bundle_dir), "--participants", "2", "--server", url]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "2 pixel observer(s): " in result.output
    finally:
        server.shutdown()
        thread.join()
    with server_app.extensions["psychinterp_db"]() as db:
        statuses = [s.status for s in db.query(ParticipantSession).all()]
        assert len(statuses) == 2 and set(statuses) <= {"completed", "failed"}  # failed: practice or catch checks
        assert db.query(Response).count() > 2
    if not paced:  # the simulation says why each failed, not just how many
        assert "2 pixel observer(s): 2 failed: timing" in result.output, result.output
        assert "timing = faster than the server's minimum times" in result.output
        return
    assert f"{statuses.count('completed')} completed" in result.output


def mean_colour(images):
    """An embedding function for the python: observer (a stand-in for a perceptual model)."""
    return np.stack([image.reshape(-1, 3).mean(axis=0) for image in images])


def one_number_each(images):
    return np.zeros(len(images))


def test_observer_from_a_users_embedding_function():
    from contracts.errors import PsychinterpError

    observer = make_observer("python:tests.test_observers:mean_colour", lapse=0.0)
    reds = [solid((200 + i, 20, 20)) for i in range(9)]
    blues = [solid((20, 20, 200 + i)) for i in range(9)]
    p, _ = observer.choice_probabilities([solid((210, 30, 30)), solid((30, 30, 210))], reds, blues)
    assert p[0] > 0.99 and observer.features.name == "tests.test_observers:mean_colour"
    for spec, message in [
        ("python:tests.test_observers", "use python:MODULE:FUNCTION"),
        ("python:tests.nowhere:f", "cannot import it"),
        ("python:tests.test_observers:np", "'np' is not callable"),
    ]:
        with pytest.raises(PsychinterpError, match=message):
            make_observer(spec)
    broken = make_observer("python:tests.test_observers:one_number_each")
    # 20 images, of which two are the same: the observer embeds each distinct image once.
    with pytest.raises(PsychinterpError, match=r"expected an array of shape \(19, d\)"):
        broken.choice_probabilities([solid((1, 1, 1))] * 2, reds, blues)


def test_a_refused_scripted_participant_is_a_one_line_error(app):
    from contracts.errors import PsychinterpError
    from psychinterp.scripted import FlowError, _call

    with pytest.raises(FlowError, match=r"POST /api/sessions: 400 ") as raised:
        _call(app.test_client(), "POST", "/api/sessions", {"platform": "direct"})
    assert isinstance(
        raised.value, PsychinterpError
    )  # so `psychinterp simulate --server` prints it without a traceback


def _tiny_models_file(tmp_path):
    import torch
    import yaml

    from stimuli.registry import build_architecture
    from stimuli.specs import ModelSpec
    from tests.conftest import TINY_MODEL

    torch.manual_seed(0)
    torch.save(build_architecture(ModelSpec.model_validate(TINY_MODEL)).state_dict(), tmp_path / "w.pt")
    (tmp_path / "models.yaml").write_text(yaml.safe_dump({"models": [{**TINY_MODEL, "weights_file": "w.pt"}]}))
    return tmp_path / "models.yaml"


def test_perceptual_observer_is_a_distance_over_normalised_layers_with_weights_from_a_file(tmp_path):
    import torch
    import yaml

    from contracts.errors import PsychinterpError
    from psychinterp.observers import PerceptualFeatures

    models = _tiny_models_file(tmp_path)
    uniform = PerceptualFeatures("tiny_resnet18", models_file=models)
    assert uniform.name.startswith("lpips:tiny_resnet18:") and 2 <= len(uniform.layers) <= 5
    red, red2, blue = solid((200, 20, 20)), solid((205, 25, 20)), solid((20, 20, 200))
    features = uniform.embed([red, red2, blue])
    distance = -uniform.similarity(features, features)
    assert distance[0, 0] == pytest.approx(0, abs=1e-6) and distance[0, 1] < distance[0, 2]
    # LPIPS: per layer, the mean over positions of the weighted squared difference of unit-length channel vectors.
    layer = uniform.layers[0]
    one = PerceptualFeatures("tiny_resnet18", [layer], models_file=models).embed([red, blue])
    assert -uniform.similarity(one[:1], one[1:])[0, 0] <= 4.0 + 1e-6  # unit vectors: at most 2^2 per position

    # An lpips package weights file (lin0.model.1.weight, ...) for the chosen layers, in order.
    channels = [uniform._weights[name].size for name in uniform.layers]
    state = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(channels)}
    torch.save(state, tmp_path / "lin.pth")
    weighted = make_observer(
        f"lpips:tiny_resnet18:{','.join(uniform.layers)}", models_file=models, layer_weights=tmp_path / "lin.pth"
    )
    np.testing.assert_allclose(weighted.features._weights[uniform.layers[0]], state["lin0.model.1.weight"].reshape(-1))
    p, _ = weighted.choice_probabilities([red2, blue], [red, red], [blue, blue])
    assert p[0] > p[1]

    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({layer: [1.0, 2.0]}))
    with pytest.raises(PsychinterpError, match=rf"bad.yaml: layer '{layer}' needs \d+ finite weights >= 0, got 2"):
        PerceptualFeatures("tiny_resnet18", [layer], tmp_path / "bad.yaml", models_file=models)
    with pytest.raises(PsychinterpError, match="no eligible layer"):
        make_observer("lpips:tiny_resnet18:nowhere", models_file=models)
    with pytest.raises(PsychinterpError, match="layer weights are for lpips:ID observers only"):
        make_observer("pixel", layer_weights=tmp_path / "lin.pth")


def test_calibration_recovers_the_temperature_and_lapse_that_made_the_answers():
    from psychinterp.observers import choice_probabilities, fit_calibration

    rng = np.random.default_rng(0)
    for options, temperature, lapse in ((2, 8.0, 0.1), (5, 3.0, 0.2)):
        evidence = rng.normal(0, 0.3, (6000, options))
        correct = rng.integers(0, options, 6000)
        p = choice_probabilities(evidence, temperature, lapse)[np.arange(6000), correct]
        fitted_t, fitted_lapse, _ = fit_calibration(evidence, correct, rng.random(6000) < p)
        assert fitted_t == pytest.approx(temperature, rel=0.2) and fitted_lapse == pytest.approx(lapse, abs=0.05)


def test_calibrate_fits_one_study_and_the_scores_of_another_carry_it(tiny_bundle_dir, tmp_path):
    import json

    import pandas as pd
    from typer.testing import CliRunner

    from contracts.errors import PsychinterpError
    from psychinterp.cli import app
    from psychinterp.observers import Calibration

    responses = tmp_path / "responses.csv"
    args = ["simulate", str(tiny_bundle_dir), "--participants", "6", "--db", f"sqlite:///{tmp_path / 's.db'}"]
    result = CliRunner().invoke(app, [*args, "--out", str(responses), "--temperature", "20", "--lapse", "0.1"])
    assert result.exit_code == 0, result.output
    calibration = tmp_path / "calibration.json"
    args = ["observers", "calibrate", str(responses), "--bundle", str(tiny_bundle_dir), "--out", str(calibration)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads(calibration.read_text())
    assert saved["observer"] == "pixel" and saved["study_id"] == load_bundle(tiny_bundle_dir).manifest.study_id
    assert saved["temperature"] > 0 and 0 <= saved["lapse"] < 1 and "pixel: temperature" in result.output

    scores = tmp_path / "scores.csv"
    args = ["simulate", str(tiny_bundle_dir), "--participants", "0", "--scores", str(scores)]
    result = CliRunner().invoke(app, [*args, "--calibration", str(calibration)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(scores)
    assert table["temperature"].iloc[0] == pytest.approx(saved["temperature"])
    assert table["lapse"].iloc[0] == pytest.approx(saved["lapse"])
    assert (table["study_id"] == saved["study_id"]).all() and (table["shown_to_people"] == "yes").all()

    with pytest.raises(PsychinterpError, match="fitted for observer 'pixel', not 'tiny_resnet18"):
        make_observer(
            "model:tiny_resnet18", models_file=_tiny_models_file(tmp_path), calibration=Calibration.load(calibration)
        )
    calibration.write_text('{"observer": "pixel"}')
    result = CliRunner().invoke(app, [*args, "--calibration", str(calibration)])
    assert isinstance(result.exception, PsychinterpError) and "not a calibration file" in str(result.exception)
