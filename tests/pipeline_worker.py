"""Run under torchrun by tests/test_sparse_dist_pipeline.py: train one stage in this process group with
the training steps forced through TorchRec's TrainPipelineSparseDist (as on CUDA), or with the plain
loop.

    python -m torch.distributed.run --standalone --nproc_per_node=N tests/pipeline_worker.py CONFIG_JSON STAGE DATASET OUT PREVIOUS|- pipelined|plain
"""
import sys
from pathlib import Path

from nmtrec.components.common.config import Config
from nmtrec.components.train import epochs
from nmtrec.components.train.distributed import close_process_group
from nmtrec.components.train.launch import train_stage_main

if __name__ == "__main__":
    cfg_json, stage, dataset, out, previous, mode = sys.argv[1:7]
    epochs.use_sparse_dist_pipeline = lambda device, objective, held_out: mode == "pipelined"
    built = []
    epochs.PipelinedSteps = lambda *a, _cls=epochs.PipelinedSteps: built.append(_cls(*a)) or built[-1]
    train_stage_main(Config.from_json(Path(cfg_json).read_text()), int(stage), dataset, out,
                     None if previous == "-" else previous)
    assert len(built) == (mode == "pipelined") and all(b.pipeline._batch_count > 0 for b in built)
    close_process_group()
