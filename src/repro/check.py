"""Preflight: before any work, check that every dataset and pretrained weight file the study needs is here.

The pipeline's first stage runs this, so a study that cannot complete (the paper profile on a machine without the
data) stops at once with a list of what is missing and how to get each piece. Exercised by `repro check`.
"""

from __future__ import annotations

from pathlib import Path

from repro.config import Params
from repro.datasets import DATASETS


def missing_inputs(params: Params, raw_root: Path, weights_lock: Path) -> list[str]:
    """One line per missing input: what it is, where it should be, how to get it. Empty when all is here.

    A weight file that is present but differs from its sha256 pin in `weights_lock` counts as a problem too.
    """
    problems = []
    for name in params.prepare.datasets:
        spec = DATASETS[name]
        raw = Path(raw_root) / name
        if spec.embedded:
            if not (raw / "source.json").is_file():
                problems.append(f"dataset {name}: {raw / 'source.json'} missing (it is in git: "
                                f"`git checkout -- {raw}`)")
        elif not raw.is_dir() or not any(raw.iterdir()):
            problems.append(f"dataset {name}: {raw} missing; {spec.fetch_hint}")
    if params.finetune.pretrained:
        from repro.errors import ReproError
        from repro.models import MODELS
        from repro.weights import locate

        weights_dir = Path(params.finetune.weights_dir) if params.finetune.weights_dir else None
        for name in params.finetune.models:
            if not MODELS[name].has_weights:  # the random-init reference loads no file
                continue
            try:
                locate(MODELS[name], weights_dir, weights_lock)
            except ReproError as error:
                problems.append(str(error))
    return problems
