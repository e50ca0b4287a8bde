"""Entry of a training stage: in this process for one worker, under torchrun for several.

`train.nproc > 1` starts `torchrun --standalone --nproc_per_node=N` (torch.distributed.run) running this
module; each worker joins the process group (gloo on the CPU, nccl on GPUs) and rank 0 writes the
checkpoint, whose stage.json is what this function returns. Inside a Kubeflow TrainJob (several
nodes) the job's own torchrun starts the workers, which already have RANK set and run in process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from nmtrec.components.common.config import Config
from nmtrec.components.common.feature_spec import FeatureSpec
from nmtrec.components.common.manifest import StageManifest


# this module's import name, also when it runs as __main__ (python -m) inside a worker
MODULE = __spec__.name if __spec__ is not None else __name__


class LaunchError(RuntimeError):
    pass


def train_stage_main(cfg: Config, stage: int, dataset_dir: str, out_dir: str, previous_dir: str | None,
                     method: str = "nmt") -> StageManifest:
    """`cfg`: the step's inputs with its run settings (step_inputs.runtime_config)."""
    # a one-class label cannot be trained or scored: refuse before any training (names task, split, counts)
    if 0 <= stage < len(cfg.tasks):
        FeatureSpec.read(dataset_dir).check_labels([cfg.tasks[stage]], where=f"stage {stage + 1}",
                                                   label_of=cfg.label_map())
    if cfg.train.checkpoint_every and not cfg.train.resume_root:
        # fallback resume root beside the stage's output, which a retried KFP step writes again. `nmtrec run`
        # sets a root under its output folder instead (pipelines/local.py): kfp.local names each run's
        # folder by time, so a rerun's stage output is a new path; the stage key (resume.py) tells
        # stages apart there.
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"resume_root": f"{out_dir}.resume"})})
    if cfg.train.nproc > 1 and "RANK" not in os.environ:
        return _torchrun(cfg, cfg.to_json(), stage, dataset_dir, out_dir, previous_dir, method)
    from nmtrec.components.train.stage import run_stage

    return run_stage(cfg, stage, dataset_dir, out_dir, previous_dir, method=method)


def _torchrun(cfg: Config, config_json: str, stage: int, dataset_dir: str, out_dir: str, previous_dir,
              method: str = "nmt") -> StageManifest:
    from nmtrec.components.train import checkpoint

    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="nmtrec-stage-", delete=False) as f:
        f.write(config_json)
    try:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.train.nproc}",
               "-m", MODULE, "@" + f.name, str(stage), dataset_dir, out_dir]
        cmd += [previous_dir or "-", method]
        rc = subprocess.call(cmd)
    finally:
        os.unlink(f.name)
    if rc != 0:
        raise LaunchError(f"stage {stage + 1}: torchrun with {cfg.train.nproc} processes failed (exit {rc}); "
                          f"the workers' errors are printed above")
    return checkpoint.read_meta(out_dir)


def main(argv: list[str]) -> int:
    """python -m nmtrec.components.train.launch CONFIG_JSON|@FILE STAGE DATASET OUT [PREVIOUS|- [METHOD]]"""
    from nmtrec.components.common.logs import setup_logging

    setup_logging()
    config = argv[0]
    if config.startswith("@"):
        with open(config[1:]) as f:
            config = f.read()
    previous = argv[4] if len(argv) > 4 and argv[4] != "-" else None
    # the workers get the whole runtime config (run settings included) from the launching process
    meta = train_stage_main(Config.from_json(config), int(argv[1]), argv[2], argv[3], previous,
                            argv[5] if len(argv) > 5 else "nmt")
    from nmtrec.components.train.distributed import close_process_group

    close_process_group()
    print(json.dumps({"ok": True, "task": meta.task}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
