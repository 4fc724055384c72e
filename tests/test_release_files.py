"""The files a reviewer reads before running anything stay in step with the code: docs/assets.md lists every
registered dataset with its registry license and every registered model; CITATION.cff has the fields the Citation
File Format requires and cites the paper; the Dockerfile and `make setup` install through the one shared recipe.
The container itself is built and run by scripts/ci-container.sh (CI), not here."""

import re
from pathlib import Path

import yaml

from repro.datasets import DATASETS
from repro.models import MODELS

ROOT = Path(__file__).resolve().parents[1]


def _table_rows(markdown: str) -> dict[str, str]:
    """First cell (backticks stripped) -> whole row, for every Markdown table row."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            first = line.split("|")[1].strip().strip("`")
            rows[first] = line
    return rows


def test_assets_list_every_dataset_with_the_registry_license():
    rows = _table_rows((ROOT / "docs/assets.md").read_text())
    for spec in DATASETS.values():
        row = next((r for first, r in rows.items() if first.lower().startswith(spec.display.lower()[:6])), None)
        assert row is not None, f"docs/assets.md has no row for dataset {spec.name} ({spec.display})"
        # The registry's wording may be a short form of the row's ("CC BY-NC 4.0 (ISIC archive)").
        license_core = spec.license.split(" (")[0]
        assert license_core in row, f"docs/assets.md: {spec.name} row lacks the registry license {spec.license!r}"


def test_assets_list_every_registered_model_with_its_top1():
    rows = _table_rows((ROOT / "docs/assets.md").read_text())
    for name in MODELS:
        spec = MODELS[name]
        assert name in rows, f"docs/assets.md has no row for model {name}"
        top1 = "none" if spec.top1 is None else f"{spec.top1:g}"  # the random-init reference has no top-1
        assert f"| {top1} |" in rows[name], f"docs/assets.md: {name} row lacks top-1 {top1}"


def test_citation_has_the_required_fields_and_cites_the_paper():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    for key in ("cff-version", "message", "title", "authors"):
        assert cff.get(key), f"CITATION.cff: missing required key {key!r}"
    assert cff["cff-version"] == "1.2.0"
    paper = next(ref for ref in cff["references"] if "2301.04644" in ref.get("url", ""))
    assert [a["family-names"] for a in paper["authors"]] == ["Fang", "Kornblith", "Schmidt"]
    assert paper["year"] == 2023


def test_image_and_make_setup_share_one_install_recipe():
    makefile = (ROOT / "Makefile").read_text()
    setup_recipe = re.search(r"^\$\(STAMP\):.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert "scripts/install-deps.sh" in setup_recipe and "pip" not in setup_recipe
    dockerfile = (ROOT / "Dockerfile").read_text()
    runs = [line for line in dockerfile.splitlines() if line.startswith("RUN")]
    assert sum("scripts/install-deps.sh" in line for line in runs) == 2  # --deps-only, then --package-only
    assert not any(re.search(r"\bpip\b", line) for line in runs), "the Dockerfile must not install with pip itself"
    assert re.search(r"^ARG BASE_IMAGE=\S+@sha256:[0-9a-f]{64}$", dockerfile, re.M), "base not pinned by digest"
    assert re.search(r"^USER (?!0\b|root\b)", dockerfile, re.M), "the image must not run as root"
