"""The held-out (validation) batches NMT's multipliers follow: fixed by the step, exact losses."""

import numpy as np
import pytest
import torch

from nmtrec.components.common.feature_spec import FeatureSpec
from nmtrec.components.train.data import load_split
from nmtrec.components.train.distributed import init_process_group
from nmtrec.components.train.epochs import HeldOutStream, task_losses


class ConstantLogit(torch.nn.Module):
    """Logit 1 for every row and task: a batch's BCE then depends only on its labels."""

    def forward(self, kjt):
        return torch.ones(kjt.stride(), 2)


@pytest.fixture(scope="module")
def valid(tiny_dataset, tiny_cfg):
    init_process_group()
    spec = FeatureSpec.read(tiny_dataset / "dataset")
    return load_split(str(tiny_dataset / "dataset"), spec, "valid", tiny_cfg.tasks)


def bce_at_logit_one(labels: np.ndarray) -> np.ndarray:
    y = labels.astype(np.float64)
    return (y * np.log1p(np.exp(-1.0)) + (1 - y) * np.log1p(np.exp(1.0))).mean(0)


def test_same_step_same_batch_and_passes_differ(valid):
    stream = HeldOutStream(valid, 64, seed=5, loss_fn=task_losses)
    model = ConstantLogit()
    first = [stream.losses(model, s) for s in range(stream.per_pass + 2)]
    assert torch.equal(HeldOutStream(valid, 64, seed=5, loss_fn=task_losses).losses(model, 3), first[3])  # resumable
    assert not torch.equal(first[0], first[stream.per_pass])  # the next pass is reshuffled


def test_small_validation_split_is_one_batch_of_all_rows(valid):
    stream = HeldOutStream(valid, valid.rows + 1000, seed=0, loss_fn=task_losses)
    assert stream.batch_size == valid.rows and stream.per_pass == 1
    got = stream.losses(ConstantLogit(), 7).double().numpy()
    assert got == pytest.approx(bce_at_logit_one(valid.labels), rel=1e-6)
