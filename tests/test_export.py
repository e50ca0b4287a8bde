"""`nmtrec export`: the exported program against evaluation's scoring (TorchRec model, encoded rows),
int8 against fp32, the vocabulary lookup against preprocessing's encoder, and loading in a fresh
process that cannot import nmtrec."""
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from sklearn.metrics import roc_auc_score

from nmtrec.components.common.feature_spec import FeatureSpec
from nmtrec.components.evaluate.scoring import predict_checkpoint
from nmtrec.components.preprocess.vocab import Encoder, OOV_INDEX
from nmtrec.components.serve.bundle import load_program, read_manifest
from nmtrec.components.serve.quantize import dequantize_rows, quantize_rowwise
from nmtrec.components.train import checkpoint
from nmtrec.pipelines.cli import main
from serve_helpers import decode, kjt_of, read_encoded, unseen_id, vocabularies


@pytest.fixture(scope="module")
def exported(tiny_stage2, tiny_dataset, tmp_path_factory):
    """{"fp32": dir, "int8": dir}, both written by the CLI."""
    root = tmp_path_factory.mktemp("export")
    out = {}
    for kind in ("fp32", "int8"):
        args = ["export", "--checkpoint", str(tiny_stage2), "--dataset", str(tiny_dataset / "dataset"),
                "--output", str(root / kind)] + (["--int8"] if kind == "int8" else [])
        assert main(args) == 0
        out[kind] = root / kind
    return out


@pytest.fixture(scope="module")
def split_rows(tiny_stage2, tiny_dataset, exported):
    """The test split: (raw ids, present, labels, evaluation's probabilities)."""
    data = tiny_dataset / "dataset"
    spec = FeatureSpec.read(data)
    ids, present = decode(read_encoded(data, spec), spec, vocabularies(data, spec), read_manifest(exported["fp32"]))
    labels, probs, _, _ = predict_checkpoint(str(tiny_stage2), str(data))
    return ids, present, labels, probs


def _run(model_dir, ids, present) -> np.ndarray:
    program = load_program(model_dir)
    tasks = read_manifest(model_dir)["tasks"]
    with torch.no_grad():
        out = program(torch.from_numpy(ids), torch.from_numpy(present))
    return np.stack([out[t].double().numpy() for t in tasks], axis=1)


def test_fp32_scores_equal_evaluation(exported, split_rows):
    ids, present, _, probs = split_rows
    got = _run(exported["fp32"], ids, present)
    assert got.shape == probs.shape and len(got) > 500
    assert np.abs(got - probs).max() <= 1e-6
    # any batch size, one row included (the batch dimension is dynamic)
    assert np.abs(_run(exported["fp32"], ids[:1], present[:1]) - probs[:1]).max() <= 1e-6


def test_int8_auc_within_1e3_of_fp32(exported, split_rows):
    ids, present, labels, probs = split_rows
    q = _run(exported["int8"], ids, present)
    assert 0 < np.abs(q - probs).max() < 0.01  # quantized (not the fp32 tables), and close
    for i, task in enumerate(read_manifest(exported["int8"])["tasks"]):
        assert abs(roc_auc_score(labels[:, i], q[:, i]) - roc_auc_score(labels[:, i], probs[:, i])) <= 1e-3


def test_rowwise_quantization_matches_torch_fbgemm_reference():
    torch.manual_seed(0)
    w = torch.randn(500, 16) * 0.3
    w[7] = 0.25  # a constant row comes back exactly
    codes, scale, bias = quantize_rowwise(w)
    packed = torch.ops.quantized.embedding_bag_byte_prepack(w)  # fbgemm's 8-bit rows: codes, fp32 scale, bias
    assert torch.equal(codes, packed[:, :16])
    assert torch.allclose(dequantize_rows(codes, scale, bias), torch.ops.quantized.embedding_bag_byte_unpack(packed),
                          atol=1e-6, rtol=0)
    assert (dequantize_rows(codes, scale, bias) - w).abs().max() <= scale.max() / 2 + 1e-7
    assert torch.equal(dequantize_rows(codes, scale, bias)[7], w[7])


def test_raw_ids_map_to_rows_as_preprocessing_encodes(tiny_stage2, tiny_dataset):
    """Kept ids -> their rows, unknown ids -> the OOV row, nulls -> the null row: preprocessing's Encoder."""
    from nmtrec.components.serve.export import _load_model, build_servable

    data = tiny_dataset / "dataset"
    spec = FeatureSpec.read(data)
    meta = checkpoint.read_meta(tiny_stage2)
    model = _load_model(tiny_stage2, meta, meta.parsed_config(), spec, data)
    servable, _ = build_servable(model, spec, data, meta.tasks)
    rng = np.random.default_rng(0)
    for name, vocab in vocabularies(data, spec).items():
        raw = np.concatenate([vocab, rng.integers(-5, vocab.max() + 50, 300), [unseen_id(vocab)]])
        null = rng.random(len(raw)) < 0.1
        want = Encoder(vocab).encode(pa.array(raw, mask=null))
        got = servable.tables[name].rows(torch.from_numpy(raw), torch.from_numpy(~null)).numpy()
        assert np.array_equal(got, want), name
        assert (want == OOV_INDEX).any() and (want == 0).any()


def test_unknown_ids_score_as_the_oov_row(tiny_stage2, tiny_dataset, exported):
    """Rows whose user is unknown and whose category is null score as the TorchRec model scores the
    OOV and null indices."""
    from nmtrec.models.registry import build_model

    data = tiny_dataset / "dataset"
    spec = FeatureSpec.read(data)
    table = read_encoded(data, spec)
    n = table.num_rows
    users = table.column("user_id").to_numpy().copy()
    users[::2] = OOV_INDEX
    category = table.column("video_category").to_numpy().copy()
    category[::3] = 0
    table = table.set_column(table.schema.get_field_index("user_id"), "user_id", pa.array(users))
    table = table.set_column(table.schema.get_field_index("video_category"), "video_category", pa.array(category))
    meta = checkpoint.read_meta(tiny_stage2)
    model = build_model(meta.parsed_config().model, spec, len(meta.tasks), device="cpu")
    checkpoint.load_unsharded(tiny_stage2, model)
    with torch.no_grad():
        want = torch.sigmoid(model.eval()(kjt_of(table, spec))).double().numpy()
    manifest = read_manifest(exported["fp32"])
    ids, present = decode(table, spec, vocabularies(data, spec), manifest)
    user = manifest["inputs"]["columns"].index("user_id")
    assert not np.isin(ids[::2, user], vocabularies(data, spec)["user_id"]).any() and n > 500
    assert np.abs(_run(exported["fp32"], ids, present) - want).max() <= 1e-6


_FRESH = r"""
import importlib.util, sys
sys.path.append(sys.argv[1])  # site-packages for torch and numpy; no .pth files run (-S), so no nmtrec
assert importlib.util.find_spec("nmtrec") is None, "nmtrec is importable in the fresh process"

class Refuse:  # and nothing may pull in nmtrec, TorchRec or fbgemm while loading or running
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("nmtrec", "torchrec", "fbgemm_gpu"):
            raise ImportError("refused: " + name)

sys.meta_path.insert(0, Refuse())
import json
import numpy as np
import torch
model_dir, inputs, output = sys.argv[2:5]
tasks = json.load(open(model_dir + "/export.json"))["tasks"]
program = torch.export.load(model_dir + "/model.pt2").module()
x = np.load(inputs)
with torch.no_grad():
    out = program(torch.from_numpy(x["ids"]), torch.from_numpy(x["present"]))
np.save(output, np.stack([out[t].double().numpy() for t in tasks], axis=1))
print(sorted(m for m in sys.modules if m.split(".")[0] in ("nmtrec", "torchrec", "fbgemm_gpu")))
"""


def test_loads_and_predicts_in_a_fresh_process_without_nmtrec(exported, split_rows, tmp_path):
    ids, present, _, probs = split_rows
    np.savez(tmp_path / "inputs.npz", ids=ids, present=present)
    site = str(Path(torch.__file__).parents[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run([sys.executable, "-I", "-S", "-c", _FRESH, site, str(exported["fp32"]),
                           str(tmp_path / "inputs.npz"), str(tmp_path / "out.npy")],
                          cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"  # none of them was imported
    assert np.abs(np.load(tmp_path / "out.npy") - probs).max() <= 1e-6


def test_manifest_names_tasks_features_versions_and_the_stage(tiny_stage2, exported):
    meta = checkpoint.read_meta(tiny_stage2)
    m = json.loads((exported["fp32"] / "export.json").read_text())
    assert m["tasks"] == meta.tasks == ["like", "click"]
    assert m["features"]["user_id"] == {"table": "user_id", "columns": ["user_id"], "pooling": "single"}
    assert m["features"]["hist"] == {"table": "item_id", "columns": [f"hist_{i}" for i in range(1, 11)],
                                     "pooling": "mean"}
    assert m["inputs"]["columns"] == [c for f in m["features"].values() for c in f["columns"]]
    assert m["versions"]["torch"] == torch.__version__
    assert m["versions"]["nmtrec"] == importlib.metadata.version("nmtrec")
    assert m["frozen_optima"] == meta.frozen_optima and m["frozen_valid_auc"] == meta.frozen_valid_auc
    assert [s["constraint_audit"] for s in m["stages"]] == [s.constraint_audit for s in meta.stages]
    assert [s.get("test_audit") for s in m["stages"]] == [s.test_audit for s in meta.stages]
    assert m["embeddings"] == "fp32" and "int8" in read_manifest(exported["int8"])["embeddings"]
    assert not list(exported["fp32"].parent.glob("*.partial"))


def test_dataset_found_beside_the_stage_of_a_run(tiny_stage2, tiny_dataset, tmp_path, capsys):
    run = tmp_path / "kfp" / "run-1"
    (run / "train-stage-2").mkdir(parents=True)
    (run / "train-stage-2" / "checkpoint").symlink_to(tiny_stage2)
    assert main(["export", "--checkpoint", str(run / "train-stage-2" / "checkpoint"), "--output",
                 str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--dataset" in err
    (run / "preprocess-dataset").mkdir()
    (run / "preprocess-dataset" / "dataset").symlink_to(tiny_dataset / "dataset")
    assert main(["export", "--checkpoint", str(run / "train-stage-2" / "checkpoint"), "--output",
                 str(tmp_path / "out")]) == 0
    assert read_manifest(tmp_path / "out")["dataset"] == str((tiny_dataset / "dataset").resolve())


def test_bad_inputs_exit_2_with_one_line(tiny_stage2, tiny_dataset, tmp_path, capsys):
    other = tmp_path / "other-dataset"
    shutil.copytree(tiny_dataset / "dataset", other)
    spec = json.loads((other / "feature_spec.json").read_text())
    users = spec["tables"]["user_id"]["vocab_size"]
    spec["tables"]["user_id"]["vocab_size"] += 1
    (other / "feature_spec.json").write_text(json.dumps(spec))
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    cases = [
        (["--checkpoint", str(tmp_path / "nope"), "--dataset", str(other)], "checkpoint directory not found"),
        (["--checkpoint", str(tiny_stage2), "--dataset", str(other)],
         f"table 'user_id' has {users + 1} rows there but {users} in"),
        (["--checkpoint", str(tiny_stage2), "--dataset", str(tmp_path)], "feature_spec.json: missing"),
    ]
    for args, message in cases:
        assert main(["export", *args, "--output", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
        assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    assert main(["export", "--checkpoint", str(tiny_stage2), "--dataset", str(tiny_dataset / "dataset"),
                 "--output", str(keep)]) == 2
    assert "is not an exported model; refusing to replace it" in capsys.readouterr().err
    assert (keep / "notes.txt").read_text() == "mine"
