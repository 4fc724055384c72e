"""The reviewer's view: `repro verify` on fabricated paper-profile results, `repro report`'s HTML file, and that
file opened in headless Chromium."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import BIN, ROOT, run

REPRO = str(BIN / "repro")
PAPER = yaml.safe_load((ROOT / "profiles/paper.yaml").read_text())
# Slopes (post-VGG fit) close to the paper's: C4 below 0.05 on four datasets, C5 0.11 and 0.29.
PAPER_SLOPES = {"cct20": 0.11, "hpa": 0.29, "aptos": 0.01, "melanoma": 0.02, "cassava": 0.0, "eurosat": 0.03}


def paper_results(folder, slopes: dict[str, float]):
    """A fabricated paper-profile summary.csv: the 19 models of profiles/paper.yaml with their registered top-1,
    each dataset's metric on a line of the given slope (steeper below 70%), plus a figure file, under `folder`."""
    from repro.datasets import DATASETS
    from repro.models import MODELS

    rows = []
    for dataset, slope in slopes.items():
        for model in PAPER["finetune"]["models"]:
            top1 = MODELS[model].top1
            x = top1 / 100 - 0.7
            value = 0.8 + slope * x if x >= 0 else 0.8 + 3 * slope * x
            rows.append({"model": model, "model_display": MODELS[model].display, "imagenet_top1": top1, "init": "imagenet",
                         "weights_sha256": "0" * 64,
                         "dataset": dataset, "metric": DATASETS[dataset].metric, "value": value,
                         "select_value": value, "lr": 1e-3, "wd": 0.0, "epoch": 10, "status": "ok",
                         "value_low": value - 0.01, "value_high": value + 0.01, "value_ci": "fabricated"})
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "summary.csv", index=False)
    for row in rows:  # `repro analyze` reads each run's curves for the sensitivity table (repro.sensitivity)
        run_dir = folder / "results/runs" / MODELS[row["model"]].path / row["dataset"]
        run_dir.mkdir(parents=True, exist_ok=True)
        curve = [{"epoch": 1, "train_loss": 1.0, "select": row["value"], "report": row["value"]}]
        record = {**{k: row[k] for k in ("model", "model_display", "imagenet_top1", "init", "dataset", "metric",
                                         "value", "status")},
                  "weights": {"sha256": row["weights_sha256"]},
                  "configs": [{"lr": 1e-3, "wd": 0.0, "diverged": False, "best_epoch": 1, "curve": curve}]}
        (run_dir / "run.json").write_text(json.dumps(record))
    (folder / "figure1.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # C3 needs the figure to exist
    return folder


def verify(folder, *extra, check=False):
    files = ["--params", str(ROOT / "profiles/paper.yaml"), "--summary", str(folder / "summary.csv"),
             "--slopes", str(folder / "slopes.json")]
    run([REPRO, "analyze", *files], folder)
    return run([REPRO, "verify", *files, "--claims", str(ROOT / "paper/claims.yaml"), "--figure",
                str(folder / "figure1.png"), "--json", str(folder / "claims.json"), *extra], folder, check=check)


def test_paper_like_results_pass_verify_strict(tmp_path):
    done = verify(paper_results(tmp_path, PAPER_SLOPES), "--strict")
    assert done.returncode == 0, done.stdout + done.stderr
    verdicts = {c["id"]: c["verdict"] for c in json.loads((tmp_path / "claims.json").read_text())["claims"]}
    assert [verdicts[c] for c in ("C1", "C2", "C3", "C4", "C5")] == ["pass"] * 5
    assert verdicts["C6"] == "not evaluated" and verdicts["R1"] == "not evaluated (needs the smoke profile)"
    assert "10 claims: 5 pass, 0 fail, 5 not evaluated" in done.stdout


def test_results_violating_c4_make_verify_strict_fail(tmp_path):
    done = verify(paper_results(tmp_path, {**PAPER_SLOPES, "cassava": 0.2}), "--strict")
    assert done.returncode == 1
    claims = {c["id"]: c for c in json.loads((tmp_path / "claims.json").read_text())["claims"]}
    assert claims["C4"]["verdict"] == "fail" and "cassava 0.200 [" in claims["C4"]["ours"]
    assert claims["C5"]["verdict"] == "pass"
    assert "1 fail" in done.stdout
    assert verify(tmp_path).returncode == 0  # without --strict a failing claim is reported, not an error


# ---- tables and the HTML report -------------------------------------------------------------------------------


def slopes_and_table(tmp_path, n_models=8):
    from repro.analysis import dataset_slopes

    rng = np.random.default_rng(0)
    top1 = np.linspace(56.5, 83.4, n_models)
    rows = [{"model": f"m{i}", "model_display": f"Model_{i} & <b>", "imagenet_top1": t, "init": "imagenet",
             "weights_sha256": f"{i:064x}", "dataset": name,
             "metric": "accuracy", "value": 0.6 + 0.1 * (t - 70) / 100 + rng.normal(0, 0.01), "select_value": 0.6,
             "lr": 1e-3, "wd": 0.0, "epoch": 3, "status": "ok", "value_low": 0.55, "value_high": 0.7,
             "value_ci": "Clopper-Pearson exact binomial over test examples"}
            for name in ("aptos", "eurosat") for i, t in enumerate(top1)]
    table = pd.DataFrame(rows)
    return table, dataset_slopes(table, 70, 500, 0, 0.95)


def test_slope_table_in_markdown_and_latex(tmp_path):
    from repro.report import latex_table, markdown_table, slope_caption, slope_rows

    _, slopes = slopes_and_table(tmp_path)
    rows = slope_rows(slopes)
    assert [(r["dataset"], r["fit"]) for r in rows] == [("aptos", "all models"), ("aptos", "top-1 >= 70%"),
                                                       ("eurosat", "all models"), ("eurosat", "top-1 >= 70%")]
    fit = slopes["datasets"]["aptos"]["above_threshold"]
    assert rows[1]["slope"] == f"{fit['slope']:.3f}" and rows[1]["interval"] == \
        f"[{fit['ci']['low']:.3f}, {fit['ci']['high']:.3f}]"
    caption = slope_caption(slopes)
    assert "95% percentile bootstrap over models" in caption and "500 resamples, seed 0" in caption
    md = markdown_table(rows, caption=caption).splitlines()
    assert md[2] == "| dataset | metric | fit | models | slope | interval | intercept | r |"
    assert len(md) == 4 + 4  # caption, blank line, header, rule, four rows
    tex = latex_table(rows, caption="a 95% interval")
    assert r"top-1 $\geq$ 70\%" in tex and r"a 95\% interval" in tex and tex.count(r" \\") == 5
    assert tex.startswith(r"\begin{table}") and r"\bottomrule" in tex


def write_report(tmp_path) -> str:
    from repro.plots import figure1, figure_appendix_b
    from repro.report import compute_used, model_rows, render_report
    from repro.results import provenance

    table, slopes = slopes_and_table(tmp_path)
    figure1(table, slopes, tmp_path / "f1.png")
    figure_appendix_b(table, slopes, tmp_path / "fb.png")
    claims = [{"id": "C4", "claim": "slope < 0.05", "paper_value": "0.05", "ours": "aptos 0.1", "tolerance": "0.0",
               "tolerance_why": "a bound", "verdict": "fail", "reason": "", "command": "repro analyze"},
              {"id": "C6", "claim": "x", "paper_value": "q", "ours": "", "tolerance": "", "verdict": "not evaluated",
               "reason": "needs experiments", "command": "none"}]
    info = {**provenance(ROOT), "splits": {"aptos.csv": "ab" * 32}, "raw_data": [{"path": "data/raw", "md5": "cd"}]}
    runs = [{"device": "cuda", "train_seconds": 3600.0, "wall_seconds": 4000.0, "provenance": {"git_sha": "f" * 40}}]
    html = render_report(profile="paper", figures=[("Figure 1", (tmp_path / "f1.png").read_bytes()),
                                                   ("Appendix B", (tmp_path / "fb.png").read_bytes())],
                         slopes=slopes, claims=claims, provenance=info, summary_rows=model_rows(table),
                         compute=compute_used(runs))
    (tmp_path / "report.html").write_text(html)
    return html


def test_report_is_one_self_contained_file_with_tables_and_provenance(tmp_path):
    import re

    html = write_report(tmp_path)
    assert len(re.findall(r'<img class="figure" src="data:image/png;base64,', html)) == 2
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing loaded from the network
    assert not re.search(r'(src|href)="(?!data:)', html)  # nor from another file
    assert "Model_0 &amp; &lt;b&gt;" in html and "Model_0 & <b>" not in html  # names are escaped
    assert 'class="fail">fail' in html and "not evaluated: needs experiments" in html
    assert "ab" * 32 in html and "f" * 40 in html and "1 runs on cuda" in html and "1.0 h (3600 s)" in html
    assert "500 resamples, seed 0" in html and "[0.5500, 0.7000]" in html


def _browser():
    import shutil

    for name in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium found (Debian: apt-get install chromium-headless-shell); the report's offline "
                "rendering is not checked here")


def test_report_renders_offline_in_headless_chromium_with_its_figures_decoded(tmp_path):
    import subprocess

    from PIL import Image

    from repro.plots import ABOVE_COLOR

    browser = _browser()
    html = write_report(tmp_path)
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    # 1. The browser decodes every figure: a probe script (only in a copy) writes what the DOM says after load.
    probe = ("<script>addEventListener('load', () => { const imgs = [...document.querySelectorAll('img.figure')];"
             "document.body.setAttribute('data-decoded', imgs.filter(i => i.complete && i.naturalWidth > 0)"
             ".map(i => i.naturalWidth + 'x' + i.naturalHeight).join(','));});</script>")
    (tmp_path / "probe.html").write_text(html.replace("</body>", probe + "</body>"))
    dom = subprocess.run([*flags, "--dump-dom", (tmp_path / "probe.html").as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    sizes = dom.split('data-decoded="')[1].split('"')[0].split(",")
    widths = {Image.open(tmp_path / name).size for name in ("f1.png", "fb.png")}
    assert {tuple(map(int, s.split("x"))) for s in sizes} == widths and len(sizes) == 2
    # 2. A screenshot of the report itself is not blank and shows the figures' red fit line and points.
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,4000", (tmp_path / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text, tables and plots, not one flat colour
    red = (np.abs(pixels - np.array([0xD6, 0x27, 0x28])) <= 30).all(axis=2).sum()
    assert red > 500, red
