"""The report as a person sees it, in headless Debian chromium: the summary, the models' order, labels, figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from tests.test_browser import CHROMIUM

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (make test installs it)"),
]

# Ids in the opposite order to their sizes: the page must order by parameters, not by name.
MODELS = {
    "alpha": {"display_name": "Alpha-Large", "parameter_count": 10**8, "train_images": 10**6},
    "beta": {"display_name": "Beta-Small", "parameter_count": 10**6, "train_images": 10**6},
    "gamma": {"display_name": "Gamma-Medium", "parameter_count": 10**7, "train_images": 10**6},
}


def _responses(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for model, ease in (("alpha", 1.6), ("beta", 0.6), ("gamma", 1.1)):
        for condition in ("natural", "synthetic"):
            for p in range(12):
                for u in range(10):
                    rows.append(
                        {
                            "participant_id": f"{condition}-{model}-p{p}",
                            "model_id": model,
                            "condition": condition,
                            "unit_id": f"{model}__layer{u % 3}__{u}",
                            "trial_kind": "main",
                            "correct": int(rng.random() < expit(ease + rng.normal(0, 0.3))),
                            "confidence": int(rng.integers(1, 4)),
                            "layer_index": u % 3,
                            "n_layers": 3,
                        }
                    )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def report_page(tmp_path_factory):
    from analysis.report import write_report

    root = tmp_path_factory.mktemp("report")
    _responses().to_csv(root / "responses.csv", index=False)
    return write_report(root / "responses.csv", root / "report", models=MODELS, n_resamples=300, exclusions="none")


def test_the_report_reads_in_order_of_scale_with_a_summary_and_captions(report_page, browser, artifacts):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(report_page.as_uri())
    summary = page.text_content("#summary")
    assert "natural: accuracy from" in summary and "across 3 models" in summary
    assert "about scale" in summary  # the scaling sentence, in the words of its verdict
    assert "models, smallest first: Beta-Small, Gamma-Medium, Alpha-Large" in page.text_content(".meta")
    first_table = page.locator("table").first
    headers = first_table.locator("th").all_text_contents()
    assert "95% CI low" in headers and "ci_low" not in headers
    shown = [cell for cell in first_table.locator("tbody tr td:first-child").all_text_contents()]
    assert shown[::2] == ["Beta-Small", "Gamma-Medium", "Alpha-Large"]  # two conditions per model
    assert page.evaluate("getComputedStyle(document.body).fontFamily").split(",")[0] != "serif"
    figures = page.locator("figure")
    assert figures.count() >= 3
    for i in range(figures.count()):
        figure = figures.nth(i)
        assert figure.locator("figcaption").text_content().strip()
        assert figure.locator("img").evaluate("img => img.complete && img.naturalWidth > 0")
    page.screenshot(path=artifacts / "report.png", full_page=True)
    # The CSV keeps the machine names and ids.
    table = pd.read_csv(report_page.parent / "accuracy.csv")
    assert {"ci_low", "model_id"} <= set(table.columns) and set(table["model_id"]) == set(MODELS)


def test_every_unit_has_a_page_whose_images_load_and_the_index_sorts_and_filters(
    tiny_bundle_dir, browser, artifacts, tmp_path
):
    """The microscope of the tiny study, with one scripted participant's responses."""
    from analysis.report import write_report
    from contracts.bundle import load_bundle
    from experiment_server import create_app
    from experiment_server.export import export_csv
    from tests.server_helpers import SCRIPTED_CRITERIA, answer_all, pass_practice, start

    bundle = load_bundle(tiny_bundle_dir)
    app = create_app(
        {"bundle_dir": tiny_bundle_dir, "database_url": f"sqlite:///{tmp_path / 'm.db'}", "criteria": SCRIPTED_CRITERIA}
    )
    client = app.test_client()
    for _ in range(2):
        token = start(client)["token"]
        state = pass_practice(client, bundle, token)
        client.post(f"/api/sessions/{token}/phase", json={"phase": "main"})
        answer_all(client, bundle, token, state["n_trials"])
        client.post(f"/api/sessions/{token}/complete")
    export_csv(bundle, app.extensions["psychinterp_db"], tmp_path / "responses.csv")
    page_path = write_report(
        tmp_path / "responses.csv", tmp_path / "report", bundle=tiny_bundle_dir, n_resamples=100, exclusions="none"
    )
    units = tmp_path / "report" / "units"
    assert sorted(p.stem for p in units.glob("*.html")) == sorted(
        [u.unit_id for u in bundle.manifest.units] + ["index"]
    )
    assert not list(units.rglob("*.png"))  # images are the bundle's, not copies

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(page_path.as_uri())
    page.click("text=Every unit")
    rows = page.locator("#units tbody tr")
    assert rows.count() >= len(bundle.manifest.units)
    page.fill("#filter", "synthetic")
    visible = [r for r in range(rows.count()) if rows.nth(r).is_visible()]
    assert visible and all("synthetic" in rows.nth(r).text_content() for r in visible)
    page.fill("#filter", "")
    page.click("#units th:has-text('accuracy')")
    shown = [float(t) for t in page.locator("#units tbody tr td:nth-child(7)").all_text_contents() if t]
    assert shown == sorted(shown)
    page.screenshot(path=artifacts / "units-index.png", full_page=True)

    unit = bundle.manifest.units[0]
    page.goto((units / f"{unit.unit_id}.html").as_uri())
    images = page.locator("img")
    assert images.count() > 18  # exemplars, visualisations and queries
    for i in range(images.count()):
        images.nth(i).scroll_into_view_if_needed()  # the page loads them lazily
        assert images.nth(i).evaluate("img => img.decode().then(() => img.naturalWidth > 0)")
    assert page.locator("figure.answer").count() >= 1  # the correct query of each trial is marked
    text = page.text_content("body")
    assert "How people did" in text and "95% CI (Wilson)" in text and unit.layer in text
    page.screenshot(path=artifacts / "unit-page.png", full_page=True)
