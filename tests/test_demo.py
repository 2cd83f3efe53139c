import csv

import pytest


@pytest.mark.slow
def test_demo_runs_end_to_end_offline_and_reruns_from_cache(tmp_path, monkeypatch):
    from psychinterp.demo import OBSERVERS, run_demo

    monkeypatch.setenv("PSYCHINTERP_OFFLINE", "1")
    run_demo(tmp_path, serve=False)
    rows = list(csv.DictReader((tmp_path / "responses.csv").open()))
    assert len({r["participant_id"] for r in rows}) == OBSERVERS
    assert {r["condition"] for r in rows} == {"natural", "synthetic"}
    assert (tmp_path / "report" / "index.html").exists()
    natural = [int(r["correct"]) for r in rows if r["condition"] == "natural"]
    assert sum(natural) / len(natural) > 0.5  # the colour observer beats chance on natural exemplars

    manifest = (tmp_path / "bundle" / "manifest.json").read_bytes()
    run_demo(tmp_path, serve=False)  # cached: no rebuild, no duplicate observers
    assert (tmp_path / "bundle" / "manifest.json").read_bytes() == manifest
    assert len(list(csv.DictReader((tmp_path / "responses.csv").open()))) == len(rows)
