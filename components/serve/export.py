"""`nmtrec export`: a stage checkpoint -> a self-contained servable model directory.

torch.export, not TorchScript: TorchScript (torch.jit.script/trace) is deprecated in this torch and
warns on every call, while torch.export is what TorchRec's own serialization (torchrec.ir) targets.
The program is exported from plain torch (components/serve/servable.py: the vocabularies and tables
as tensors, no TorchRec or fbgemm op), with a dynamic batch dimension, so `torch.export.load` alone
runs it anywhere torch runs.

The dataset a checkpoint was trained on gives the vocabularies (raw id -> row); its table sizes must
equal the checkpoint's, else it is another dataset and the export is refused. Written atomically:
`<output>.partial`, renamed when complete.
"""
from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from pydantic import ValidationError
from torch import nn

from nmtrec.components.common.feature_spec import FeatureSpec
from nmtrec.components.common.files import atomic_dir, write_json_atomic
from nmtrec.components.common.manifest import StageManifest
from nmtrec.components.preprocess.vocab import FIRST_ID
from nmtrec.components.serve.bundle import KIND, MANIFEST, PROGRAM, VERSION
from nmtrec.components.serve.errors import ServeError
from nmtrec.components.serve.servable import FeatureInput, Servable, Table
from nmtrec.components.train import checkpoint
from nmtrec.models.registry import build_model
from nmtrec.models.sparse import FeatureSpecMismatch, check_spec

_EXAMPLE_ROWS = 4  # any batch > 1 traces the same graph; the batch dimension is exported as dynamic


class _Dense(nn.Module):
    """The trained architecture from pooled embeddings on (its EmbeddingBagCollection removed)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        del model.sparse  # replaced by the Servable's tables; its weights must not travel twice
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_dense(x)


def find_dataset(ckpt_dir: str | Path) -> Path:
    """The dataset beside a stage of `nmtrec run`: <run>/preprocess-*/dataset next to <run>/train-stage*/checkpoint."""
    run_dir = Path(ckpt_dir).absolute().parent.parent
    found = sorted(p.parent for p in run_dir.glob("preprocess-*/dataset/feature_spec.json"))
    if len(found) != 1:
        where = f"found {len(found)} under {run_dir}" if found else f"none beside it under {run_dir}"
        raise ServeError(f"{ckpt_dir}: cannot tell which dataset this checkpoint was trained on ({where}); "
                         f"give the preprocessed dataset directory with --dataset")
    return found[0]


def _read_dataset(dataset_dir: Path, cfg) -> FeatureSpec:
    try:
        spec = FeatureSpec.read(dataset_dir)
        check_spec(spec, cfg.features)
    except (FileNotFoundError, FeatureSpecMismatch, ValueError) as e:
        raise ServeError(f"--dataset {dataset_dir}: {e}") from None
    return spec


def _load_model(ckpt_dir: Path, meta: StageManifest, cfg, spec: FeatureSpec, dataset_dir: Path) -> nn.Module:
    path = ckpt_dir / checkpoint.UNSHARDED
    if not path.is_file():
        raise ServeError(f"{ckpt_dir}: no {checkpoint.UNSHARDED} (a resume checkpoint?): export a finished "
                         f"stage's checkpoint artifact")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(cfg.model, spec, len(meta.tasks), device="cpu")
    for conf in model.sparse.embedding_bag_configs():
        key = f"sparse.embedding_bags.{conf.name}.weight"
        table = spec.table_of(conf.feature_names[0])
        if key in state and state[key].shape[0] != conf.num_embeddings:
            raise ServeError(f"--dataset {dataset_dir}: table {table!r} has {conf.num_embeddings} rows there but "
                             f"{state[key].shape[0]} in {path}: not the dataset this checkpoint was trained on")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ServeError(f"{path}: does not fit the model its stage.json describes: {e}") from None
    return model.eval()


def _vocab(dataset_dir: Path, spec: FeatureSpec, table: str) -> np.ndarray:
    info = spec.tables[table]
    path = dataset_dir / info.vocab
    if not info.vocab or not path.is_file():
        raise ServeError(f"--dataset {dataset_dir}: vocabulary of table {table!r} missing ({path})")
    ids = pq.read_table(path, columns=["raw_id"]).column("raw_id").to_numpy()
    if len(ids) + FIRST_ID != info.vocab_size:
        raise ServeError(f"{path}: {len(ids)} ids, but feature_spec.json gives table {table!r} "
                         f"{info.vocab_size} rows ({FIRST_ID} reserved)")
    return ids


def build_servable(model: nn.Module, spec: FeatureSpec, dataset_dir: Path, tasks: list[str],
                   int8: bool = False) -> tuple[Servable, list[str]]:
    """(the plain-torch servable, its input columns in order). Takes `model` apart: its embedding
    tables move into the servable's Tables, the rest becomes its dense part."""
    tables = {}
    for conf in model.sparse.embedding_bag_configs():
        name = spec.table_of(conf.feature_names[0])
        info = spec.tables[name]
        tables[name] = Table(_vocab(dataset_dir, spec, name), model.sparse.embedding_bags[conf.name].weight,
                             first_row=FIRST_ID, null_row=info.null_index, oov_row=info.oov_index, int8=int8)
    features, columns = [], []
    for name in spec.feature_names():
        raw = [name] if name in spec.sparse else list(spec.bags[name].columns)
        features.append(FeatureInput(name, spec.table_of(name), len(columns), len(raw), name in spec.bags))
        columns += raw
    return Servable(tables, features, _Dense(model), tasks).eval(), columns


def _manifest(ckpt_dir: Path, dataset_dir: Path, meta: StageManifest, cfg, spec: FeatureSpec, servable: Servable,
              columns: list[str], int8: bool) -> dict:
    stage = {k: v for k, v in meta.to_dict().items()
             if k in ("stage", "task", "method", "model_hash", "epoch", "step", "frozen_optima", "frozen_valid",
                      "frozen_valid_auc", "frozen_test_auc", "valid_loss", "epochs")}
    return {
        "kind": KIND, "version": VERSION, "program": PROGRAM,
        "load": f"torch.export.load('{PROGRAM}').module()(ids, present) -> {{task: probability [batch]}}",
        "tasks": list(meta.tasks),  # priority order; also the output names
        "inputs": {"columns": columns, "ids": "int64 [batch, columns]: raw ids, as in the data file",
                   "present": "bool [batch, columns]: False where the field is null (a bag's 0 is padding)"},
        "data_format": spec.format or cfg.data.source,  # older datasets lack `format`
        "features": {f.name: {"table": f.table, "columns": columns[f.first:f.first + f.width],
                              "pooling": "mean" if f.bag else "single"} for f in servable.features},
        "tables": {name: {"rows": t.shape[0], "dim": t.shape[1], "vocab_ids": t.shape[0] - FIRST_ID,
                          "null_row": t.null_row, "oov_row": t.oov_row} for name, t in servable.tables.items()},
        "embeddings": "int8 row-wise (per-row scale and bias), dequantized on lookup" if int8 else "fp32",
        "versions": {"torch": torch.__version__, "nmtrec": importlib.metadata.version("nmtrec"),
                     "python": platform.python_version()},
        "checkpoint": str(ckpt_dir.resolve()), "dataset": str(dataset_dir.resolve()),
        **stage,
        # the stage's audits as it recorded them (per-step series stay in the checkpoint's histories/)
        "stages": [{k: v for k, v in s.to_dict().items() if k != "history"} for s in meta.stages or []],
        "config": meta.config,
    }


def export_checkpoint(ckpt_dir: str | Path, out_dir: str | Path, *, dataset_dir: str | Path | None = None,
                      int8: bool = False) -> dict:
    """Export one stage checkpoint; returns the manifest written as export.json."""
    ckpt_dir, out = Path(ckpt_dir), Path(out_dir)
    try:
        meta = checkpoint.read_meta(ckpt_dir)
    except checkpoint.CheckpointError as e:
        raise ServeError(str(e)) from None
    if out.exists() and not (out / MANIFEST).is_file() and (out.is_file() or any(out.iterdir())):
        raise ServeError(f"--output {out}: exists and is not an exported model; refusing to replace it")
    dataset = Path(dataset_dir) if dataset_dir is not None else find_dataset(ckpt_dir)
    try:
        cfg = meta.parsed_config()
    except ValidationError as e:  # a checkpoint written by an nmtrec with another config schema
        raise ServeError(f"{ckpt_dir / 'stage.json'}: its config does not validate here: "
                         f"{str(e).splitlines()[0]}") from None
    spec = _read_dataset(dataset, cfg)
    model = _load_model(ckpt_dir, meta, cfg, spec, dataset)
    servable, columns = build_servable(model, spec, dataset, list(meta.tasks), int8)
    example = (torch.zeros(_EXAMPLE_ROWS, len(columns), dtype=torch.int64),
               torch.ones(_EXAMPLE_ROWS, len(columns), dtype=torch.bool))
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.export.export(servable, example, dynamic_shapes=({0: batch}, {0: batch}))
    manifest = _manifest(ckpt_dir, dataset, meta, cfg, spec, servable, columns, int8)
    with atomic_dir(out) as tmp:
        torch.export.save(program, str(tmp / PROGRAM))
        write_json_atomic(tmp / MANIFEST, manifest)
    return manifest
