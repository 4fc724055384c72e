"""METRICS: name -> function(targets, scores) -> fraction in [0, 1] (or [-1, 1] for kappa), on scikit-learn.

`targets` are class ids (N,) or, for multi-label data, a multi-hot array (N, C); `scores` are (N, C) class
probabilities. Exercised by `repro finetune` and by recomputing a metric from a run's predictions.csv.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from repro.registry import Registry

Metric = Callable[[np.ndarray, np.ndarray], float]
METRICS: Registry[Metric] = Registry("metric")


def accuracy(targets: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(targets, scores.argmax(axis=1)))


def quadratic_kappa(targets: np.ndarray, scores: np.ndarray) -> float:
    """APTOS: quadratic weighted Cohen's kappa of the arg-max grade."""
    from sklearn.metrics import cohen_kappa_score

    return float(cohen_kappa_score(targets, scores.argmax(axis=1), weights="quadratic"))


def roc_auc(targets: np.ndarray, scores: np.ndarray) -> float:
    """Melanoma: ROC AUC of the positive class."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(targets, scores[:, 1]))


def macro_f1(targets: np.ndarray, scores: np.ndarray) -> float:
    """HPA: macro F1 over labels of multi-hot targets, predictions thresholded at 0.5."""
    from sklearn.metrics import f1_score

    return float(f1_score(targets, (scores >= 0.5).astype(int), average="macro", zero_division=0))


METRICS.register("accuracy", accuracy)
METRICS.register("quadratic_kappa", quadratic_kappa)
METRICS.register("roc_auc", roc_auc)
METRICS.register("macro_f1", macro_f1)
