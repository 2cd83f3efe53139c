"""The report as a person sees it, in headless Debian chromium: the summary, the models' order, labels, figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

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


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


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
