"""nmt.distill_variants: a stage with variants also trains one fresh model distilled from all of them
(their averaged probabilities) and offers it to the variants' choice (components/train/alternatives.py,
objectives/distilled.py, teacher.py)."""
import numpy as np
import pytest
import torch
import torch.distributed as dist
from pydantic import ValidationError

from nmtrec.components.common.config import Config
from nmtrec.components.evaluate.scoring import predict_checkpoint
from nmtrec.components.train import checkpoint
from nmtrec.components.train.alternatives import choose
from nmtrec.components.train.objectives.distilled import HARD, Distilled
from nmtrec.components.train.stage import _train_stage, run_stage

ALT = {"higher_weight": 0.0, "lambda_init": 0.0}


def test_the_distilled_loss_mixes_labels_and_teachers_evenly_over_the_tasks():
    f = torch.tensor([0.4, 0.9], dtype=torch.float64)
    d = torch.tensor([0.03, 0.07], dtype=torch.float64)
    got = Distilled().loss(f, divergence=d)
    assert float(got) == pytest.approx((HARD * 0.4 + (1 - HARD) * 0.03 + HARD * 0.9 + (1 - HARD) * 0.07) / 2,
                                       rel=1e-12)
    with pytest.raises(ValueError, match="teachers' predictions"):
        Distilled().loss(f)


def test_several_teachers_average_their_probabilities(tiny_cfg, tiny_dataset, tmp_path):
    """Against a float64 numpy average and KL on a real batch."""
    from nmtrec.components.common.feature_spec import FeatureSpec
    from nmtrec.components.train.data import eval_batches, load_split
    from nmtrec.components.train.teacher import Teacher

    data = str(tiny_dataset / "dataset")
    cfg = tiny_cfg.updated(train={"max_epochs": 1})
    run_stage(cfg, 0, data, str(tmp_path / "a"))
    run_stage(cfg.updated(seed=cfg.seed + 1), 0, data, str(tmp_path / "b"))
    spec = FeatureSpec.read(data)
    kjt = next(iter(eval_batches(load_split(data, spec, "valid", ["like", "click"]), 512)))[0]
    one = [Teacher(tmp_path / n, cfg.model, spec, 1, torch.device("cpu")) for n in "ab"]
    both = Teacher([tmp_path / "a", tmp_path / "b"], cfg.model, spec, 1, torch.device("cpu"))
    pa, pb = (t.probabilities(kjt).double().numpy()[:, 0] for t in one)
    assert not np.allclose(pa, pb)  # two different models
    p = both.probabilities(kjt).double().numpy()[:, 0]
    np.testing.assert_allclose(p, (pa + pb) / 2, rtol=1e-6)
    logits = torch.randn(len(p), 1, dtype=torch.float64)
    q = 1 / (1 + np.exp(-logits[:, 0].numpy()))
    kl = np.mean(p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q)))
    assert float(both.divergence(logits.float(), kjt)[0]) == pytest.approx(kl, rel=1e-4)


def test_distill_variants_is_not_a_variant_key():
    with pytest.raises(ValidationError, match="distill_variants not an nmt key"):
        Config.model_validate({"tasks": ["like", "click"], "nmt": {"alternatives": [{"distill_variants": False}]}})


@pytest.mark.slow
def test_the_stage_offers_the_model_distilled_from_its_variants_to_the_choice(tiny_cfg, tiny_dataset, tmp_path):
    data = str(tiny_dataset / "dataset")
    run_stage(tiny_cfg, 0, data, str(tmp_path / "s1"))
    s1 = str(tmp_path / "s1")
    own = run_stage(tiny_cfg, 1, data, str(tmp_path / "own"), s1)
    alt = run_stage(tiny_cfg.updated(nmt=ALT), 1, data, str(tmp_path / "alt"), s1)
    alone = _train_stage(tiny_cfg, 1, data, str(tmp_path / "student"), s1,
                         teachers=[str(tmp_path / "own"), str(tmp_path / "alt")])
    assert alone.stages[-1].lambda_final == {}  # no multipliers: the choice's rule holds it, not constraints
    metas = [own, alt, alone]
    losses = [m.stages[-1].valid_loss for m in metas]
    assert len({x["click"] for x in losses}) == 3  # three different models
    best = choose(losses, ["like"], "click")

    cfg = tiny_cfg.updated(nmt={"alternatives": [ALT], "distill_variants": True})
    if dist.is_initialized():  # as in a step that reuses stage 1 from the cache: no process group yet
        dist.destroy_process_group()
    meta = run_stage(cfg, 1, data, str(tmp_path / "chosen"), s1)
    record = meta.stages[-1].alternatives
    assert [r["nmt"] for r in record] == [{}, ALT, {}]
    assert record[2]["distilled_from"] == [0, 1] and "distilled_from" not in record[0]
    for r, want in zip(record, losses):
        assert r["valid_loss"] == pytest.approx(want, rel=1e-6)
    assert [r["kept"] for r in record] == [i == best for i in range(3)]
    checkpoint.verify(tmp_path / "chosen")
    _, got, _, _ = predict_checkpoint(str(tmp_path / "chosen"), data)
    _, want, _, _ = predict_checkpoint(str(tmp_path / ["own", "alt", "student"][best]), data)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not list(tmp_path.glob("*.partial"))
