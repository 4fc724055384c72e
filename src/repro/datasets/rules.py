"""The authors' split rules as pure functions (PAPER.md section 3), run once by `repro data prepare NAME`.

Each takes what the authors' loader reads, in the loader's file order, and returns one split name per row. The
RNG is a private `np.random.RandomState(seed)`: it draws exactly the numbers `np.random.seed(seed)` followed by
`np.random.choice` draw from numpy's legacy global RNG, without touching global state. The results are then stored
as ID lists pinned by sha256 (repro.splits), so nobody depends on this RNG code again.
"""

from __future__ import annotations

from collections.abc import Sequence

HELDOUT = "heldout"
TRAIN = "train"

# CCT-20 (PAPER.md section 3): the 15 category ids in the authors' order; 30 ("empty") is dropped.
CCT20_CATEGORIES = (1, 3, 5, 6, 7, 8, 9, 10, 11, 16, 21, 33, 34, 51, 99)
CCT20_EMPTY = 30
CCT20_SPLITS = ("train", "cis_val", "cis_test")  # trans_val / trans_test are not used by the authors
HPA_SPLITS = ("train", "val", "test_val")  # the Split column of the authors' split file


def stratified_holdout(labels: Sequence[int], seed: int, num_classes: int, fraction: float = 0.2) -> list[str]:
    """APTOS, Cassava (seed 414) and EuroSAT (seed 42): per class c = 0..K-1 in order, hold out
    `choice(indices_of_class_c, int(fraction * n_c), replace=False)`; the rest is train."""
    import numpy as np

    y = np.asarray(labels, dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    rng = np.random.RandomState(seed)  # seeded once, before the first class (PAPER.md section 3)
    split = [TRAIN] * len(y)
    for c in range(num_classes):
        members = np.flatnonzero(y == c)  # file order
        # int() truncates like the authors' int(0.2 * n); an absent class draws nothing
        for i in rng.choice(members, int(fraction * len(members)), replace=False):
            split[int(i)] = HELDOUT
    return split


def fold_holdout(folds_by_source: Sequence[Sequence[int]], seed: int, fraction: float = 0.8) -> list[list[str]]:
    """Melanoma (seed 23): one RNG for all sources, in the given order (2020 first, then 2019). Per source the
    fold ids are the distinct tfrecord values >= 0; `choice(folds, int(fraction * len(folds)), replace=False)`
    are train, the other folds held out. Rows with a negative fold must be dropped by the caller first."""
    import numpy as np

    rng = np.random.RandomState(seed)  # seeded once before the two sources (PAPER.md section 3)
    out = []
    for folds in folds_by_source:
        values = np.asarray(folds, dtype=np.int64)
        if values.size and values.min() < 0:
            raise ValueError("drop the rows with a negative tfrecord before the fold rule")
        # "the distinct tfrecord values": read as np.unique, i.e. sorted ascending. The order matters, since
        # choice() picks positions; a first-appearance order would pick other folds from the same draws.
        distinct = np.unique(values)
        chosen = set(int(f) for f in rng.choice(distinct, int(fraction * len(distinct)), replace=False))
        out.append([TRAIN if int(f) in chosen else HELDOUT for f in values])
    return out


def cct20_label(category_id: int) -> int:
    """The label index of a CCT-20 category id (ValueError for the dropped empty class or an unknown id)."""
    return CCT20_CATEGORIES.index(category_id)
