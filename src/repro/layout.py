"""The project's file layout, relative to the repository root (where dvc.yaml is). Only repro.cli uses it."""

from pathlib import Path

PARAMS = Path("params.yaml")
WEIGHTS_LOCK = Path("weights.lock.json")  # sha256 pins of the pretrained weight files (repro.weights)
PROFILES = Path("profiles")
RAW = Path("data/raw")
PREPARED = Path("data/prepared")
SPLITS = Path("data/splits")
DOWNLOADS = Path("data/downloads")  # archives of `repro data fetch` (resumable .part files too); not in git
FETCH_LOCK = Path("data/fetch.lock.json")  # sha256 of every fetched archive, recorded on first download
CACHE = Path("data/cache")  # decoded-image caches (repro.datasets.cache); never in git or DVC
PINS = SPLITS / "SHA256SUMS"
DATA_DVC = Path("data.dvc")  # md5 pins of the raw datasets (dvc add)
RESULTS = Path("results")
CHECK = RESULTS / "check.json"
RUNS = RESULTS / "runs"
SUMMARY = RESULTS / "summary.csv"
METRICS = RESULTS / "metrics.json"
SLOPES = RESULTS / "slopes.json"
CLAIMS_OUT = RESULTS / "claims.json"
FIGURES = Path("paper/figures")
FIGURE1 = FIGURES / "figure1.png"
FIGURE_B = FIGURES / "figure1_appendix_b.png"  # the Appendix-B variant: error bars, bands, spline
TABLES = Path("paper/tables")
PLOT_DATA = RESULTS / "plots"  # per-dataset CSVs for `dvc plots show`
REPORT = RESULTS / "report.html"


def split_file(dataset: str) -> Path:
    return SPLITS / f"{dataset}.csv"


def data_dir(dataset: str) -> Path:
    """Where finetune reads a dataset's images: the prepared folder for the embedded set, else the raw one."""
    from repro.datasets import DATASETS

    spec = DATASETS[dataset]
    if spec.embedded:
        return PREPARED / dataset
    return Path(spec.root) if spec.root else RAW / dataset


def run_dir(model_path: Path, dataset: str) -> Path:
    return RUNS / model_path / dataset
