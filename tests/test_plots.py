"""Figure 1 and its Appendix-B variant drawn from synthetic results: every dataset gets a panel, both formats are
written atomically and repeatably, and what the Appendix-B figure adds (error bars, bands, spline) is on the page."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from repro.analysis import dataset_slopes
from repro.plots import ABOVE_COLOR, SPLINE_COLOR, figure1, figure_appendix_b

DATASETS = ("aptos", "cassava", "cct20", "eurosat", "hpa", "melanoma")


def results(n_models: int = 10, datasets=DATASETS) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    top1 = np.linspace(56.5, 83.4, n_models)
    rows = []
    for d, name in enumerate(datasets):
        for i, t in enumerate(top1):
            value = 0.6 + 0.05 * d * (t - 70) / 100 + rng.normal(0, 0.01)
            rows.append({"model": f"m{i}", "model_display": f"Model {i}", "imagenet_top1": t, "init": "imagenet", "dataset": name,
                         "metric": "accuracy", "value": value, "status": "ok",
                         "value_low": value - 0.02, "value_high": value + 0.02})
    return pd.DataFrame(rows)


def pixels_near(png, color: str, tolerance: int = 40) -> int:
    """How many pixels of the image are within `tolerance` (per channel) of the hex colour."""
    image = np.asarray(Image.open(png).convert("RGB")).astype(int)
    target = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(image - target) <= tolerance).all(axis=2).sum())


def test_both_figures_are_written_as_png_and_pdf_with_no_temp_file_and_the_same_bytes_twice(tmp_path):
    table = results()
    slopes = dataset_slopes(table, 70, 200, 0, 0.95)
    for draw, stem in ((figure1, "figure1"), (figure_appendix_b, "figure1_appendix_b")):
        outs = [tmp_path / f"{stem}.png", tmp_path / f"{stem}.pdf"]
        assert draw(table, slopes, outs) == outs[0]
        first = [o.read_bytes() for o in outs]
        assert first[0][:8] == b"\x89PNG\r\n\x1a\n" and first[1][:5] == b"%PDF-"
        draw(table, slopes, outs)
        assert [o.read_bytes() for o in outs] == first  # no timestamps: a re-run of the stage changes nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "figure1.pdf", "figure1.png", "figure1_appendix_b.pdf", "figure1_appendix_b.png"]
    assert Image.open(tmp_path / "figure1.png").size == (2070, 1200)  # three columns, two rows of panels


def test_appendix_b_adds_the_spline_and_the_bands_and_says_when_it_cannot(tmp_path):
    table = results(datasets=("a",))
    slopes = dataset_slopes(table, 70, 200, 0, 0.95)
    plain = figure1(table, slopes, tmp_path / "plain.png")
    full = figure_appendix_b(table, slopes, tmp_path / "b.png")
    assert pixels_near(full, SPLINE_COLOR) > 200 and pixels_near(plain, SPLINE_COLOR) == 0
    # the red band (alpha 0.15 over white) is a pale red that the plain figure lacks
    assert pixels_near(full, "#f9dfdf", 8) > 10 * max(pixels_near(plain, "#f9dfdf", 8), 50)  # plain: antialiasing
    assert pixels_near(full, ABOVE_COLOR) > 50
    few = results(n_models=4, datasets=("a",))
    few_slopes = dataset_slopes(few, 70, 200, 0, 0.95)
    assert few_slopes["datasets"]["a"]["spline"]["reason"] == "needs at least 5 distinct models, has 4"
    assert pixels_near(figure_appendix_b(few, few_slopes, tmp_path / "few.png"), SPLINE_COLOR) == 0


def test_models_without_an_interval_are_drawn_as_plain_points(tmp_path):
    table = results(datasets=("a",)).drop(columns=["value_low", "value_high"])
    slopes = dataset_slopes(table, 70, 100, 0, 0.95)
    assert figure_appendix_b(table, slopes, tmp_path / "b.png").is_file()


def test_no_results_is_a_clear_error(tmp_path):
    table = results(datasets=("a",))
    slopes = dataset_slopes(table, 70, 100, 0, 0.95)
    with pytest.raises(ValueError, match="no dataset has results"):
        figure_appendix_b(table, {**slopes, "datasets": {}}, tmp_path / "b.png")
    assert not list(tmp_path.iterdir())
