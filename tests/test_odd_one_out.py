"""The odd-one-out paradigm end to end: the builder's guarantees, scoring, the server, and what a browser sees."""

from __future__ import annotations

from collections import Counter

import pytest

from contracts.bundle import load_bundle
from contracts.errors import ConfigError
from contracts.paradigms import odd_one_out, paradigm_named
from tests.conftest import ODD_ONE_OUT_STUDY, write_tiny_study
from tests.server_helpers import SCRIPTED_CRITERIA, answer_all, image_fetcher, pass_practice, start


def test_the_paradigm_value():
    five = odd_one_out()
    assert five.name == "odd_one_out_5" and paradigm_named("odd_one_out_5") == five
    assert five.chance == pytest.approx(0.2) and five.n_queries == 5 and not five.shows_references
    assert five.answer_position(five.query_order(0)) == five.query_order(0).index(4)
    controls = five.answers()
    assert [c["key"] for c in controls] == ["1", "2", "3", "4", "5", "a", "s", "d"]
    assert five.problem_with(5, 2) and five.problem_with(4, 4) and five.problem_with(4, 3) is None
    with pytest.raises(ValueError, match="3 to 9 images"):
        odd_one_out(2)
    with pytest.raises(ValueError, match="odd_one_out_5"):
        paradigm_named("odd_one_out_12")


def test_trials_hold_n_images_with_the_odd_one_balanced_and_no_image_shown_twice(tiny_odd_bundle_dir):
    bundle = load_bundle(tiny_odd_bundle_dir)
    manifest, answers = bundle.manifest, bundle.answer_key.answers
    assert manifest.paradigm == "odd_one_out_4" and set(manifest.conditions) == {"natural", "synthetic"}
    for trial in manifest.all_trials():
        assert len(trial.queries) == 4 and trial.max_side is None
        assert not trial.references.min and not trial.references.max
        answer = answers[trial.trial_id]
        odd = answer.max_query
        others = [a for i, a in enumerate(answer.query_activations) if i != odd]
        # The odd image is one of the unit's least activating: below every image it is shown with.
        assert answer.query_activations[odd] < min(others)
        if trial.kind == "catch":
            assert len({q for i, q in enumerate(trial.queries) if i != odd}) == 1
        else:
            assert len(set(trial.queries)) == 4
    for task in manifest.tasks:
        positions = Counter(answers[t.trial_id].max_query for t in task.trials)
        assert max(positions.values()) - min(positions.get(p, 0) for p in range(4)) <= 1
    # No image repeats across a unit's main trials of one condition (each shows its own batch).
    for condition in manifest.conditions:
        shown: dict[str, list[str]] = {}
        for task in manifest.tasks:
            for trial in task.trials:
                if trial.condition == condition and trial.kind == "main":
                    shown.setdefault(trial.unit_id, []).extend(trial.queries)
        for images in shown.values():
            assert len(images) == len(set(images))


def test_a_random_odd_image_comes_from_outside_the_exemplars(tmp_path):
    from stimuli.build import build_study
    from stimuli.study import load_study_config

    study = {**ODD_ONE_OUT_STUDY, "odd_one_out": {"images": 3, "odd_image": "random"}, "conditions": ["natural"]}
    bundle = build_study(load_study_config(write_tiny_study(tmp_path, **study)), tmp_path / "b")
    for trial in bundle.manifest.all_trials():
        answer = bundle.answer_key.answers[trial.trial_id]
        odd = answer.max_query
        exemplars = [r for r in bundle.manifest.reference_images if r.unit_id == trial.unit_id]
        # Not one of the unit's own exemplars (another unit's may be drawn, as any image of the dataset) ...
        assert trial.queries[odd] not in {r.sha256 for r in exemplars}
        assert answer.query_sources[odd] not in {r.source for r in exemplars}
        assert answer.query_ranks[odd] > 2 * 9  # ... so it ranks below the unit's max references (2 batches of 9)


def test_config_errors_name_the_problem(tmp_path):
    from stimuli.study import load_study_config

    cases = [
        ({"conditions": ["none"]}, "condition 'none' has no images"),
        ({"odd_one_out": {"images": 4, "odd_image": "random"}}, "random puts a photograph among visualisations"),
        (
            {"feature_visualization": {"images_per_direction": 5}},
            "need feature_visualization.images_per_direction >= 6",
        ),
        ({"odd_one_out": {"images": 12}}, "odd_one_out.images"),
    ]
    for change, message in cases:
        path = write_tiny_study(tmp_path, **{**ODD_ONE_OUT_STUDY, **change})
        with pytest.raises(ConfigError, match=message):
            load_study_config(path)


@pytest.fixture
def odd_app(tiny_odd_bundle_dir, tmp_path):
    from experiment_server import create_app

    return create_app(
        {
            "bundle_dir": tiny_odd_bundle_dir,
            "database_url": f"sqlite:///{tmp_path / 'odd.db'}",
            "criteria": SCRIPTED_CRITERIA,
        }
    )


def test_a_session_completes_and_is_scored_and_analysed_with_chance_one_in_n(odd_app, tiny_odd_bundle_dir, tmp_path):
    from analysis.pipeline import analyse
    from experiment_server.export import export_csv

    bundle = load_bundle(tiny_odd_bundle_dir)
    client = odd_app.test_client()
    session = start(client)
    assert session["layout"] == "grid" and "odd one out" in session["question"]
    token = session["token"]
    state = pass_practice(client, bundle, token)
    assert state["status"] == "active" and state["practice_block"] is None
    client.post(f"/api/sessions/{token}/phase", json={"phase": "main"})
    answer_all(client, bundle, token, state["n_trials"])
    done = client.post(f"/api/sessions/{token}/complete").get_json()
    assert done["status"] == "completed"
    out = tmp_path / "responses.csv"
    export_csv(bundle, odd_app.extensions["psychinterp_db"], out)
    rows = out.read_text().splitlines()
    assert "odd_one_out_4" in rows[1]
    results = analyse(out, n_resamples=200, exclusions="none")  # one scripted session: too fast for ours
    assert results.chance == pytest.approx(0.25)
    assert (results.accuracy["accuracy"] == 1.0).all()


def test_nothing_a_browser_sees_marks_the_odd_image(odd_app, tiny_odd_bundle_dir):
    """Every slot of a trial: one size, the same headers but its own ETag; the JSON says nothing per query."""
    bundle = load_bundle(tiny_odd_bundle_dir)
    client = odd_app.test_client()
    token = start(client)["token"]
    pass_practice(client, bundle, token)
    client.post(f"/api/sessions/{token}/phase", json={"phase": "main"})
    n = client.get(f"/api/sessions/{token}").get_json()["n_trials"]
    fetch = image_fetcher(client)
    for i in range(n):
        trial = client.get(f"/api/sessions/{token}/trials/{i}").get_json()
        assert set(trial) == {
            "trial_index", "n_trials", "condition", "max_side", "references", "queries", "layout", "question",
            "wrong_feedback", "answers", "shown",
        }  # fmt: skip
        assert trial["max_side"] is None and trial["references"] == {"min": [], "max": []}
        assert trial["queries"] == [f"/api/sessions/{token}/trials/{i}/images/q{k}.png" for k in range(4)]
        responses = [client.get(url) for url in trial["queries"]]
        assert len({len(r.data) for r in responses}) == 1
        header_sets = [{k: v for k, v in r.headers.items() if k != "ETag"} for r in responses]
        assert all(h == header_sets[0] for h in header_sets), header_sets
        assert len({r.headers["ETag"] for r in responses}) == 4
        assert len({bytes(r.data) for r in responses}) == 4  # even a catch trial's repeated image differs in bytes
        fetch(trial["queries"][0])  # and decodes as an image
        client.post(
            f"/api/sessions/{token}/responses",
            json={"trial_index": i, "chosen_query": 0, "confidence": 1, "rt_ms": 2000.0},
        )


def test_the_similarity_observer_answers_odd_one_out_by_the_least_similar_image():
    import numpy as np

    from psychinterp.observers import PixelStatistics, SimilarityObserver

    rng = np.random.default_rng(0)
    reds = [np.clip(rng.normal([200, 30, 30], 10, (32, 32, 3)), 0, 255).astype(np.uint8) for _ in range(4)]
    blue = np.clip(rng.normal([30, 30, 200], 10, (32, 32, 3)), 0, 255).astype(np.uint8)
    observer = SimilarityObserver(PixelStatistics(), lapse=0.0, rng=np.random.default_rng(1))
    images = [reds[0], reds[1], blue, reds[2], reds[3]]
    p, margin = observer.odd_one_out_probabilities(images)
    assert int(np.argmax(p)) == 2 and p[2] > 0.7 and margin > 0
    urls = {f"u{i}": image for i, image in enumerate(images)}
    trial = {"layout": "grid", "queries": list(urls), "references": {"min": [], "max": []}}
    assert observer.decide(trial, urls.__getitem__)[0] == 2
