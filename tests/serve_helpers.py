"""Helpers of tests/test_export.py and test_predict.py: a split's encoded rows turned back into raw ids
(the exported model's input), and the lines of a raw file that preprocessing sent to a split."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torchrec import KeyedJaggedTensor

from nmtrec.components.common.feature_spec import FeatureSpec
from nmtrec.components.preprocess import draws
from nmtrec.components.preprocess.vocab import FIRST_ID, NULL_INDEX, OOV_INDEX


def vocabularies(dataset_dir: Path, spec: FeatureSpec) -> dict[str, np.ndarray]:
    return {t: pq.read_table(Path(dataset_dir) / info.vocab).column("raw_id").to_numpy()
            for t, info in spec.tables.items()}


def unseen_id(vocab: np.ndarray) -> int:
    return int(vocab.max()) + 1000


def read_encoded(dataset_dir: Path, spec: FeatureSpec, split: str = "test") -> pa.Table:
    """A split's encoded rows in evaluation's row order (its files in the spec's order), read directly."""
    return pa.concat_tables([pq.read_table(Path(dataset_dir) / f) for f in spec.split_files(split)])


def kjt_of(table: pa.Table, spec: FeatureSpec) -> KeyedJaggedTensor:
    """Encoded rows as the KeyedJaggedTensor training feeds the TorchRec model (keys in spec order)."""
    values, lengths = [], []
    for name in spec.feature_names():
        col = table.column(name).combine_chunks()
        if name in spec.bags:
            offsets = col.offsets.to_numpy()
            values.append(col.values.to_numpy()[offsets[0]:offsets[-1]])
            lengths.append(np.diff(offsets))
        else:
            values.append(col.to_numpy())
            lengths.append(np.ones(len(col), np.int64))
    return KeyedJaggedTensor.from_lengths_sync(keys=spec.feature_names(),
                                               values=torch.from_numpy(np.concatenate(values).astype(np.int64)),
                                               lengths=torch.from_numpy(np.concatenate(lengths).astype(np.int64)))


def decode(table: pa.Table, spec: FeatureSpec, vocabs: dict, manifest: dict) -> tuple[np.ndarray, np.ndarray]:
    """(ids, present) in the export's input columns for encoded rows: a kept id back to its raw id, the
    null index to an absent field, the OOV index to an id the vocabulary lacks; bags padded with 0."""
    columns = manifest["inputs"]["columns"]
    ids = np.zeros((table.num_rows, len(columns)), np.int64)
    present = np.ones((table.num_rows, len(columns)), bool)

    def raw(index: np.ndarray, name: str) -> np.ndarray:
        vocab = vocabs[spec.table_of(name)]
        out = np.where(index >= FIRST_ID, vocab[np.clip(index - FIRST_ID, 0, len(vocab) - 1)], 0)
        return np.where(index == OOV_INDEX, unseen_id(vocab), out)

    for name in spec.sparse:
        j = columns.index(name)
        index = table.column(name).to_numpy()
        ids[:, j] = raw(index, name)
        present[:, j] = index != NULL_INDEX
    for name, bag in spec.bags.items():
        first = columns.index(bag.columns[0])
        for r, row in enumerate(table.column(name).to_pylist()):
            ids[r, first:first + len(row)] = raw(np.asarray(row, np.int64), name)  # the rest stays 0: padding
    return ids, present


def split_lines(lines: np.ndarray, spec: FeatureSpec, split: int) -> np.ndarray:
    """Which of these line numbers preprocessing sent to split 0/1/2 (its own seeded draw; no sampling)."""
    assert spec.sampling is None
    u = draws.uniform(draws.line_hash(lines, spec.seed, draws.SALT_SPLIT))
    return draws.assign_split(u, spec.split_fractions) == split
