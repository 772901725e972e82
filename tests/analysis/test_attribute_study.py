"""The study object: one epoch's maps and checks, save → load round trip, summary lines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from shenjing.analysis.attribute import (
    attribution_study,
    epoch_attribution,
    load_attribution,
)
from shenjing.errors import UsageError


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 36, 4)).eval()


def _x() -> torch.Tensor:
    return torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))


def test_epoch_attribution_save_and_load_round_trip(tmp_path):
    net, x = _net(), _x()
    e = epoch_attribution(net, x, labels=[0, 1, 2], methods=("saliency",
                          "integrated_gradients", "gradcam"), epoch=3, steps=8, fractions=6)
    assert e.methods == ("saliency", "integrated_gradients", "gradcam")
    for a in e.maps.values():
        np.testing.assert_array_equal(a.targets, e.targets)   # the same classes everywhere
    with torch.no_grad():
        np.testing.assert_array_equal(e.predictions, net(x).argmax(1).numpy())
    assert set(e.randomization) == set(e.faithfulness) == set(e.methods)
    study = attribution_study([e], extra={"run": "demo"})
    files = study.save(tmp_path, extra={"options": {"steps": 8}})
    assert {p.name for p in files} == {"attribute-e003.json", "attribute-e003.npz",
                                       "summary.json"}
    back = load_attribution(tmp_path)
    assert back.epoch_numbers == (3,) and back.methods == e.methods
    assert back.extra == {"run": "demo", "options": {"steps": 8}}
    b = back.epochs[0]
    np.testing.assert_array_equal(b.inputs, x.numpy())
    for m in e.methods:
        np.testing.assert_array_equal(b.maps[m].maps, e.maps[m].maps)
        assert b.maps[m].options == e.maps[m].options and b.maps[m].layer == e.maps[m].layer
        np.testing.assert_array_equal(b.randomization[m].spearman, e.randomization[m].spearman)
        assert b.randomization[m].verdict == e.randomization[m].verdict
        np.testing.assert_array_equal(b.faithfulness[m].deletion_auc,
                                      e.faithfulness[m].deletion_auc)
    c = b.maps["integrated_gradients"].completeness
    assert c is not None
    np.testing.assert_array_equal(c.relative_error,
                                  e.maps["integrated_gradients"].completeness.relative_error)
    lines = back.summary_lines()
    assert lines == study.summary_lines()
    text = "\n".join(lines)
    assert "completeness" in text and "randomization test" in text and "Spearman" in text
    assert "deletion AUC" in text and "random order" in text
    assert not list(tmp_path.glob("*.tmp*"))


def test_study_bad_input(tmp_path):
    with pytest.raises(UsageError, match="Did you mean 'saliency'"):
        epoch_attribution(_net(), _x(), labels=[0, 1, 2], methods=("salency",))
    with pytest.raises(UsageError, match="summary.json missing"):
        load_attribution(tmp_path)
    with pytest.raises(UsageError, match="at least one epoch"):
        attribution_study([])
