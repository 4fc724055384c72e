import numpy as np
import pytest

from repro.metrics import METRICS


def one_hot_scores(predicted, classes):
    scores = np.full((len(predicted), classes), 0.01)
    scores[np.arange(len(predicted)), predicted] = 0.9
    return scores


def test_accuracy_counts_argmax_hits():
    targets = np.array([0, 1, 2, 2])
    assert METRICS["accuracy"](targets, one_hot_scores([0, 1, 1, 2], 3)) == pytest.approx(0.75)


def test_quadratic_kappa_is_one_when_perfect_and_penalises_far_grades_more():
    targets = np.array([0, 1, 2, 3, 4] * 4)
    kappa = METRICS["quadratic_kappa"]
    assert kappa(targets, one_hot_scores(targets, 5)) == pytest.approx(1.0)
    near = targets.copy()
    near[0] = 1
    far = targets.copy()
    far[0] = 4
    assert kappa(targets, one_hot_scores(near, 5)) > kappa(targets, one_hot_scores(far, 5))


def test_roc_auc_uses_the_positive_class_score():
    targets = np.array([0, 0, 1, 1])
    scores = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    assert METRICS["roc_auc"](targets, scores) == pytest.approx(0.75)


def test_macro_f1_thresholds_multilabel_scores_at_half():
    targets = np.array([[1, 0], [0, 1], [1, 1]])
    scores = np.array([[0.9, 0.1], [0.2, 0.4], [0.7, 0.8]])
    # label 0: perfect (F1 1); label 1: one of two positives found, no false positive (F1 2/3)
    assert METRICS["macro_f1"](targets, scores) == pytest.approx((1 + 2 / 3) / 2)
