"""nmt.alternatives: an NMT stage trains once per variant of its settings and keeps, among the variants no
worse than the stage as configured on the higher tasks' validation losses, the lowest validation loss of
its own task -- exactly the model that variant trains alone."""
import json

import numpy as np
import pytest
import torch.distributed as dist
from pydantic import ValidationError

from nmtrec.components.common.config import Config
from nmtrec.components.common.step_inputs import Step, step_inputs_json
from nmtrec.components.evaluate.scoring import predict_checkpoint
from nmtrec.components.train import checkpoint
from nmtrec.components.train.alternatives import choose
from nmtrec.components.train.stage import run_stage

ALT = {"higher_weight": 0.0, "lambda_init": 0.0}


def test_a_variant_is_kept_only_where_no_higher_task_is_worse():
    own = {"like": 0.30, "share": 0.50, "click": 0.60}
    better_click_worse_like = {"like": 0.31, "share": 0.50, "click": 0.40}
    better_click_worse_share = {"like": 0.29, "share": 0.51, "click": 0.45}
    no_worse = {"like": 0.30, "share": 0.49, "click": 0.55}
    higher = ["like", "share"]
    assert choose([own, better_click_worse_like], higher, "click") == 0
    assert choose([own, better_click_worse_share], higher, "click") == 0
    assert choose([own, better_click_worse_like, no_worse], higher, "click") == 2
    assert choose([own, {**no_worse, "click": 0.61}], higher, "click") == 0  # worse on its own task
    assert choose([own, dict(own)], higher, "click") == 0  # ties: the stage as configured
    assert choose([own, better_click_worse_like], [], "click") == 1  # no higher task: the new task decides


def test_the_stage_keeps_the_variant_the_rule_chooses(tiny_cfg, tiny_dataset, tmp_path):
    data = str(tiny_dataset / "dataset")
    run_stage(tiny_cfg, 0, data, str(tmp_path / "s1"))
    s1 = str(tmp_path / "s1")
    alone = {"own": run_stage(tiny_cfg, 1, data, str(tmp_path / "own"), s1),
             "alt": run_stage(tiny_cfg.updated(nmt=ALT), 1, data, str(tmp_path / "alt"), s1)}
    losses = {k: m.stages[-1].valid_loss for k, m in alone.items()}
    assert losses["own"]["click"] != losses["alt"]["click"]  # the variants train different models
    best = ["own", "alt"][choose([losses["own"], losses["alt"]], ["like"], "click")]

    cfg = tiny_cfg.updated(nmt={"alternatives": [ALT], "distill_variants": False})  # the variants alone
    if dist.is_initialized():  # as in a step that reuses stage 1 from the cache: no process group yet
        dist.destroy_process_group()
    meta = run_stage(cfg, 1, data, str(tmp_path / "both"), s1)
    s = meta.stages[-1]
    assert s.valid_loss == pytest.approx(alone[best].stages[-1].valid_loss, rel=1e-6)
    assert s.alternatives == [
        {"nmt": {}, "valid_loss": pytest.approx(alone["own"].stages[-1].valid_loss, rel=1e-6), "kept": best == "own"},
        {"nmt": ALT, "valid_loss": pytest.approx(alone["alt"].stages[-1].valid_loss, rel=1e-6), "kept": best == "alt"}]
    # a complete checkpoint under the stage's own config, scoring as the kept variant's model does
    checkpoint.verify(tmp_path / "both")
    saved = checkpoint.read_meta(tmp_path / "both")
    assert saved.config == json.loads(step_inputs_json(cfg, Step("stage", 1)))
    assert saved.stages[-1].alternatives == s.alternatives
    _, got, _, _ = predict_checkpoint(str(tmp_path / "both"), data)
    _, want, _, _ = predict_checkpoint(str(tmp_path / best), data)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not list(tmp_path.glob("*.partial"))


def test_an_alternative_names_only_nmt_keys_with_valid_values():
    for bad, said in [({"higher_wieght": 0.5}, "higher_wieght not an nmt key"),
                      ({"higher_weight": -1}, "higher_weight: Input should be greater than or equal to 0"),
                      ({"alternatives": []}, "alternatives not an nmt key")]:
        with pytest.raises(ValidationError, match="nmt.alternatives") as e:
            Config.model_validate({"tasks": ["like", "click"], "nmt": {"alternatives": [bad]}})
        assert said in str(e.value)
    cfg = Config.model_validate({"tasks": ["like", "click"], "nmt": {"higher_weight": 2, "alternatives": [ALT]}})
    # in key order with the validated types, however written: the same variant is the same step input
    again = Config.model_validate({"tasks": ["like", "click"], "nmt": {"alternatives": [{"lambda_init": 0, "higher_weight": 0}]}})
    assert json.dumps(again.nmt.alternatives) == json.dumps([ALT]) == '[{"higher_weight": 0.0, "lambda_init": 0.0}]'
    alt = cfg.nmt.alternative(0)
    assert (alt.higher_weight, alt.lambda_init, alt.alternatives) == (0.0, 0.0, [])
    assert alt.model_dump(exclude={"higher_weight", "lambda_init", "alternatives"}) == \
        cfg.nmt.model_dump(exclude={"higher_weight", "lambda_init", "alternatives"})
