import csv
import json

import pytest


@pytest.mark.slow
def test_demo_trains_a_tiny_family_and_runs_end_to_end_offline_then_reruns_from_cache(tmp_path, monkeypatch):
    """The whole demo on a tiny version of the family: the observers beat chance well on natural trials."""
    from psychinterp.demo import run_demo
    from stimuli.demo.family import FAMILY, FamilyData, TrainingRecipe
    from stimuli.specs import load_model_specs

    monkeypatch.setenv("PSYCHINTERP_OFFLINE", "1")
    # one simulated participant per task (the demo has three), visualisations of at most 32 steps
    small = {
        "data": FamilyData(train=20, val=5, pool=40),
        "recipe": TrainingRecipe(epochs=1),
        "observers": 24,
        "feature_visualization": {"max_steps": 32, "min_steps": 16},
    }
    logins = {}

    def log_in_everywhere(studies):
        """The printed login works on every study's dashboard once all the demo's apps exist (the second
        app used to replace the first's user loader: the login bounced), in chromium where it is installed."""
        import httpx

        from psychinterp.scripted import admin_login
        from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

        for study in studies:
            with httpx.Client(base_url=study.url) as client:
                logins[study.title] = "Progress per task" in admin_login(client, study.username, study.password)
        if CHROMIUM.exists():
            from playwright.sync_api import sync_playwright

            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
                for study in studies:
                    page = browser.new_page()
                    page.goto(study.url + "/admin/login")
                    page.fill("input[name=username]", study.username)
                    page.fill("input[name=password]", study.password)
                    page.click("button[type=submit]")
                    page.wait_for_url(study.url + "/admin/")
                    assert "Progress per task" in page.content()
                browser.close()

    run_demo(tmp_path, port=0, serve=False, on_ready=log_in_everywhere, **small)
    assert len(logins) == 3 and all(logins.values()), logins
    assert (tmp_path / "admin-password.txt").stat().st_mode & 0o777 == 0o600  # the owner's alone

    assert list(load_model_specs(tmp_path / "models.yaml")) == [m.id for m in FAMILY]
    assert all((tmp_path / "weights" / f"{m.id}.pt").is_file() for m in FAMILY)
    rows = list(csv.DictReader((tmp_path / "responses.csv").open()))
    assert len({r["participant_id"] for r in rows}) == 24
    assert {r["model_id"] for r in rows} == {m.id for m in FAMILY}
    assert {r["condition"] for r in rows} == {"natural", "synthetic"}
    natural = [int(r["correct"]) for r in rows if r["condition"] == "natural" and r["trial_kind"] == "main"]
    assert len(natural) >= 60 and sum(natural) / len(natural) > 0.7

    report = tmp_path / "report"
    page = (report / "index.html").read_text()
    assert "Scaling trends" in page and "Machine score and human accuracy" in page
    assert (report / "scaling.png").is_file() and (report / "machine.png").is_file()
    scores = list(csv.DictReader((report / "machine_units.csv").open()))
    shown = json.loads((tmp_path / "bundle" / "manifest.json").read_text())["units"]
    answered = {r["unit_id"] for r in rows if r["trial_kind"] == "main"}
    scored = {s["unit_id"] for s in scores}
    assert answered <= {u["unit_id"] for u in shown} and scored <= answered and len(scored) >= len(shown) / 2
    # One row per unit and condition the kept observers saw.
    assert len({(s["unit_id"], s["condition"]) for s in scores}) == len(scores) <= 2 * len(scored)
    assert "simulated" in page  # the report says that no person answered
    # The precision study: observers arrive until the server is full, no cell beyond the fixed design's most.
    adaptive = list(csv.DictReader((tmp_path / "responses-precision.csv").open()))

    def completed_per_cell(table):
        cells = {}
        for r in table:
            if r["session_completed"] == "1":
                cells.setdefault((r["model_id"], r["condition"]), set()).add(r["participant_id"])
        return {cell: len(people) for cell, people in cells.items()}

    assert 0 < max(completed_per_cell(adaptive).values()) <= max(completed_per_cell(rows).values())
    assert all(r["study_stopped"] for r in adaptive)  # it stopped by its rule, and the export says why
    assert (tmp_path / "design" / "design.csv").is_file()

    # The unit microscope: a page per unit, linked from the report.
    assert "units/index.html" in page and len(list((report / "units").glob("*.html"))) == len(shown) + 1

    # The unit-kind study: channels against k-means directions, in 2AFC and in odd-one-out.
    units_page = (tmp_path / "units-report" / "index.html").read_text()
    assert "Unit kinds: channel, kmeans" in units_page
    assert "Paradigms compared: 2afc and odd_one_out_5" in units_page
    kinds = {r["unit_kind"] for r in csv.DictReader((tmp_path / "units-2afc-responses.csv").open())}
    assert kinds == {"channel", "kmeans"}
    # Machine-only channels, scored at build time: the prediction-powered channel intervals average over them.
    assert "How close the machine comes to the noise ceiling" in units_page
    assert "Prediction-powered estimates" in units_page
    ppi = list(csv.DictReader((tmp_path / "units-report" / "ppi_models.csv").open()))
    channels = [r for r in ppi if r["unit_kind"] == "channel"]
    assert channels and all(int(r["n_scored_units"]) > int(r["n_rated_units"]) for r in channels)
    assert "How close the machine comes to the noise ceiling" in page
    odd_rows = list(csv.DictReader((tmp_path / "units-odd-responses.csv").open()))
    assert {r["paradigm"] for r in odd_rows} == {"odd_one_out_5"}

    manifest = (tmp_path / "bundle" / "manifest.json").read_bytes()
    units_manifest = (tmp_path / "units-odd-bundle" / "manifest.json").read_bytes()
    weights = (tmp_path / "weights" / "shapesnet_l.pt").stat().st_mtime_ns
    run_demo(tmp_path, port=0, serve=False, **small)  # cached: no training, no rebuild, no duplicate observers
    assert (tmp_path / "weights" / "shapesnet_l.pt").stat().st_mtime_ns == weights
    assert (tmp_path / "bundle" / "manifest.json").read_bytes() == manifest
    assert len(list(csv.DictReader((tmp_path / "responses.csv").open()))) == len(rows)
    assert (tmp_path / "units-odd-bundle" / "manifest.json").read_bytes() == units_manifest
    assert len(list(csv.DictReader((tmp_path / "units-odd-responses.csv").open()))) == len(odd_rows)


def test_demo_names_a_busy_port():
    import socket

    from flask import Flask

    from contracts.errors import PsychinterpError
    from psychinterp.serving import create_server

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PsychinterpError, match=f"cannot serve on 127.0.0.1:{port} .*--port"):
            create_server(Flask(__name__), "127.0.0.1", port)


def test_a_stopped_server_ends_its_thread_and_frees_its_port_with_a_connection_open(monkeypatch):
    import socket
    import threading
    import time

    import httpx
    from flask import Flask

    from psychinterp.serving import create_server, start_in_thread, stop

    errors = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    app = Flask(__name__)
    app.add_url_rule("/", view_func=lambda: "ok")
    for _ in range(5):  # closing from the wrong thread raced the event loop on some runs only
        server = create_server(app, "127.0.0.1", 0)
        port = server.effective_port
        thread = start_in_thread(server)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get("/").text == "ok"  # the kept-alive connection is still open as it stops
            started = time.perf_counter()
            stop(server, thread)
            assert not thread.is_alive() and time.perf_counter() - started < 5
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert errors == []
