"""The compared methods of a config (`methods`) as pipeline steps beside the NMT chain.

- `famo+nmt`: its own chain of constrained stages 2..m, starting from NMT's stage 1 (shared, and
  cached by KFP like every stage);
- joint baselines (`equal_weights`, `famo`, `weight_grid:<w1>:<w2>...`): one step each, fanned out
  with dsl.ParallelFor and collected by the evaluate step;
- `nmt` and `single_task` (stage 1's model on task 1) need no extra step.
"""

from kfp import dsl

from nmtrec.components.common.methods import is_joint
from nmtrec.components.common.config import Config
from nmtrec.components.common.step_inputs import Step, step_inputs_json

# joint baselines trained at once (kfp.local caps a ParallelFor at 2 workers as well)
PARALLELISM = 2


def add_methods(cfg: Config, train_stage_op, train_joint_op, dataset, first_stage):
    """Add the baseline steps; return (famo+nmt final checkpoint or None, collected joint checkpoints or None)."""
    famo_nmt = None
    if "famo+nmt" in cfg.methods and len(cfg.tasks) > 1:
        previous = first_stage
        for k in range(1, len(cfg.tasks)):
            step = train_stage_op(config_json=step_inputs_json(cfg, Step("stage", k)), stage=k, dataset=dataset,
                                  previous=previous, method="famo+nmt")
            step.set_display_name(f"famo-nmt-stage-{k + 1}-{cfg.tasks[k]}")
            previous = step.outputs["checkpoint"]
        famo_nmt = previous
    joint = [m for m in cfg.methods if is_joint(m)]
    if not joint:
        return famo_nmt, None
    joint_json = step_inputs_json(cfg, Step("joint"))
    with dsl.ParallelFor(items=joint, parallelism=PARALLELISM) as method:
        step = train_joint_op(config_json=joint_json, method=method, dataset=dataset)
        step.set_display_name("joint-baseline")
    return famo_nmt, dsl.Collected(step.outputs["checkpoint"])
