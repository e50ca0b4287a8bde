"""Metrics against sklearn and plain float64 references."""
import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from nmtrec.components.common.metrics import auc, gauc, logloss


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.3
    s = np.round(rng.random(2000) + 0.4 * y, 1)  # rounded: many ties
    g = rng.integers(0, 40, 2000)
    return y, s, g


def test_auc_matches_sklearn(data):
    y, s, _ = data
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_auc_single_class_is_nan():
    assert math.isnan(auc([0, 0, 0], [0.1, 0.2, 0.3]))


def test_logloss_matches_sklearn(data):
    y, s, _ = data
    p = np.clip(s / 2, 0.01, 0.99)
    assert logloss(y, p) == pytest.approx(log_loss(y, p), rel=1e-12)


def test_gauc_is_weighted_mean_of_group_aucs(data):
    y, s, g = data
    aucs, weights = [], []
    for u in np.unique(g):
        m = g == u
        if y[m].any() and (~y[m]).any():
            aucs.append(roc_auc_score(y[m], s[m]))
            weights.append(m.sum())
    assert gauc(y, s, g) == pytest.approx(np.average(aucs, weights=weights), abs=1e-12)
