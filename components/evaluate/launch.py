"""Entry of the evaluate step: in this process for one worker, under torchrun for `evaluate.nproc > 1`.

Each worker joins a gloo group (evaluation scores the unsharded model.pt on the CPU), scores a
contiguous share of every checkpoint's test split and gets the whole split's scores in row order
(scoring.py), so the report holds one process's numbers. Rank 0 writes report.json, the HTML report
and NMT's ROC points, which the launching process reads back: the KFP Metrics and
ClassificationMetrics artifacts belong to it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from nmtrec.components.common.config import Config

MODULE = __spec__.name if __spec__ is not None else __name__  # also when run as __main__ in a worker


class EvaluateLaunchError(RuntimeError):
    pass


def evaluate_main(cfg: Config, dataset_dir: str, nmt: str, first_stage: str, famo_nmt: str | None,
                  joint: list[str], report_path: str, html_path: str, metrics=None, roc=None) -> dict:
    """`cfg`: the step's inputs with its run settings (step_inputs.runtime_config). Returns the report."""
    from nmtrec.components.evaluate.report import log_kfp, write_report

    args = {"dataset_dir": dataset_dir, "nmt": nmt, "first_stage": first_stage, "famo_nmt": famo_nmt,
            "joint": list(joint), "method_order": list(cfg.methods), "report_path": report_path,
            "html_path": html_path, "batch_size": cfg.evaluate.batch_size}
    if cfg.evaluate.nproc > 1 and "RANK" not in os.environ:
        report, curve = _torchrun(cfg.evaluate.nproc, args)
    else:
        report, curve = write_report(**args)
    log_kfp(report, curve, metrics, roc)
    return report


def _torchrun(nproc: int, args: dict) -> tuple[dict, dict | None]:
    with tempfile.TemporaryDirectory(prefix="nmtrec-evaluate-") as tmp:
        args_file, curve_file = Path(tmp, "args.json"), Path(tmp, "roc.json")
        args_file.write_text(json.dumps(args))
        # the cores shared among the workers, as train.threads 0 does (torchrun alone would give each one)
        env = {**os.environ}
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
        rc = subprocess.call([sys.executable, "-m", "torch.distributed.run", "--standalone",
                              f"--nproc_per_node={nproc}", "-m", MODULE, str(args_file), str(curve_file)], env=env)
        if rc != 0:
            raise EvaluateLaunchError(f"evaluate: torchrun with {nproc} processes (evaluate.nproc) failed "
                                      f"(exit {rc}); the workers' errors are printed above")
        curve = json.loads(curve_file.read_text())
    return json.loads(Path(args["report_path"]).read_text()), curve


def main(argv: list[str]) -> int:
    """python -m nmtrec.components.evaluate.launch ARGS.json ROC_OUT.json (under torchrun)"""
    import torch.distributed as dist

    from nmtrec.components.common.files import write_json_atomic
    from nmtrec.components.common.logs import setup_logging
    from nmtrec.components.evaluate.report import write_report
    from nmtrec.components.train.distributed import close_process_group

    setup_logging()
    dist.init_process_group("gloo")
    try:
        _, curve = write_report(**json.loads(Path(argv[0]).read_text()))
        if dist.get_rank() == 0:
            write_json_atomic(argv[1], curve)
    except BaseException:
        dist.destroy_process_group()  # no barrier: the other ranks may never reach it
        raise
    close_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
