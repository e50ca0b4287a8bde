"""Run under torchrun by tests/test_eval_streaming.py: every process scores its share of a split with a
stage checkpoint (components/evaluate/scoring.py); rank 0 writes what it gathered.

    python -m torch.distributed.run --standalone --nproc_per_node=N tests/eval_worker.py CKPT DATASET SPLIT BATCH OUT.npz
"""
import sys

import numpy as np
import torch.distributed as dist

from nmtrec.components.evaluate.scoring import predict_checkpoint
from nmtrec.components.train.distributed import close_process_group

if __name__ == "__main__":
    ckpt, dataset, split, batch, out = sys.argv[1:6]
    dist.init_process_group("gloo")
    labels, probs, users, _ = predict_checkpoint(ckpt, dataset, split, int(batch))
    if dist.get_rank() == 0:
        np.savez(out, labels=labels, probs=probs, users=users)
    close_process_group()
