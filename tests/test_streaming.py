"""Streaming training input (components/train/data.py, split.py, prefetch.py) against a reference built
from the whole split in memory: the same global batches for 1 and N ranks, exact resume, evaluation
in row order for any number of ranks, and a bounded read size."""
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from nmtrec.components.common.feature_spec import FeatureSpec
from nmtrec.components.train import data
from nmtrec.components.train.prefetch import Prefetch
from nmtrec.components.train.split import GroupReader

LABELS = ["like", "click"]
GROUP = 97  # rows per row group of the rewritten dataset: many groups, none a multiple of a batch


@pytest.fixture(scope="module")
def dataset(tiny_dataset, tmp_path_factory):
    """The tiny dataset with every split file rewritten in row groups of GROUP rows."""
    root = tmp_path_factory.mktemp("groups") / "dataset"
    shutil.copytree(tiny_dataset / "dataset", root)
    spec = FeatureSpec.read(root)
    for split in spec.splits:
        for f in spec.split_files(split):
            pq.write_table(pq.read_table(root / f), root / f, row_group_size=GROUP)
    return root


def open_split(root, split="train"):
    return data.load_split(root, FeatureSpec.read(root), split, LABELS)


def whole(split) -> data.Columns:
    """Reference: every row of the split in natural order, read at once."""
    table = pa.concat_tables([pq.read_table(f) for f in split.files])
    return split.columns_of(table)


def reference_order(split, seed: int, window: int) -> np.ndarray:
    """The documented epoch order, written with the whole split's row numbers."""
    if split.rows <= window:
        return np.random.default_rng(seed).permutation(split.rows)
    bounds = [(g.first, g.first + g.rows) for g in split.groups]
    order, current, w = [], [], 0
    for k in np.random.default_rng(seed).permutation(len(bounds)):
        current.append(np.arange(*bounds[k]))
        if sum(map(len, current)) >= window:
            rows = np.concatenate(current)
            order.append(rows[np.random.default_rng([seed, w]).permutation(len(rows))])
            current, w = [], w + 1
    if current:
        rows = np.concatenate(current)
        order.append(rows[np.random.default_rng([seed, w]).permutation(len(rows))])
    return np.concatenate(order)


def same(a, b) -> bool:
    (ka, la), (kb, lb) = a[:2], b[:2]
    return (ka.keys() == kb.keys() and torch.equal(ka.values(), kb.values()) and torch.equal(ka.lengths(), kb.lengths())
            and torch.equal(la, lb))


def test_split_index_reads_metadata_only_and_covers_every_row(dataset):
    split = open_split(dataset)
    assert len(split.groups) > 10 and max(g.rows for g in split.groups) == GROUP
    assert split.rows == FeatureSpec.read(dataset).splits["train"].rows
    assert [g.first for g in split.groups] == [0] + list(np.cumsum([g.rows for g in split.groups])[:-1])
    np.testing.assert_array_equal(split.labels, whole(split).labels)


@pytest.mark.parametrize("window", [400, 10**9])  # several windows; the whole split as one (today's full shuffle)
def test_epoch_is_the_documented_order_and_the_same_global_batches_on_two_ranks(dataset, window):
    split, ref = open_split(dataset), whole(open_split(dataset))
    bs, seed = 64, 3007
    order = reference_order(split, seed, window)
    assert sorted(order) == list(range(split.rows))  # a permutation of the split
    one = list(data.batches(split, bs, 0, 1, shuffle_seed=seed, window_rows=window))
    assert len(one) == split.rows // bs
    for i, b in enumerate(one):
        assert same(b, data.make_batch(ref, order[i * bs:(i + 1) * bs])), i
    two = [list(data.batches(split, bs, r, 2, shuffle_seed=seed, window_rows=window)) for r in (0, 1)]
    assert len(two[0]) == len(two[1]) == len(one)  # every rank the same number of batches
    for i in range(len(one)):
        for r in (0, 1):  # rank r: the r-th half of global batch i
            assert same(two[r][i], data.make_batch(ref, order[i * bs + r * bs // 2:i * bs + (r + 1) * bs // 2]))


def count_reads(split, monkeypatch) -> list[int]:
    """The rows of every GroupReader.read from now on (appended as they happen)."""
    reads = []
    original = GroupReader.read

    def counting(self, groups):
        reads.append(sum(split.groups[k].rows for k in groups))
        return original(self, groups)

    monkeypatch.setattr(GroupReader, "read", counting)
    return reads


def test_resumed_epoch_continues_exactly_and_skips_earlier_windows_unread(dataset, monkeypatch):
    split = open_split(dataset)
    full = list(data.batches(split, 64, 1, 2, shuffle_seed=11, window_rows=400))
    reads = count_reads(split, monkeypatch)
    start = len(full) - 5
    resumed = list(data.batches(split, 64, 1, 2, shuffle_seed=11, window_rows=400, start=start))
    assert len(resumed) == 5 and all(same(a, b) for a, b in zip(resumed, full[start:]))
    assert sum(reads) < split.rows / 2  # the windows before the resumed batch were never read


def test_reads_stay_within_one_window(dataset, monkeypatch):
    """What a process holds: one window (at least `window` rows, whole row groups) at a time."""
    split = open_split(dataset)
    reads = count_reads(split, monkeypatch)
    assert len(list(data.batches(split, 64, 0, 1, shuffle_seed=1, window_rows=400))) == split.rows // 64
    assert sum(reads) == split.rows and max(reads) < 400 + GROUP


@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_batches_cover_every_row_in_order_with_equal_counts(dataset, world):
    split = open_split(dataset, "valid")
    ref = whole(split)
    parts = [list(data.eval_batches(split, 50, r, world)) for r in range(world)]
    assert len({len(p) for p in parts}) == 1
    got_labels = torch.cat([y[m > 0] for p in parts for _, y, m in p])
    np.testing.assert_array_equal(got_labels.numpy(), ref.labels)
    users = torch.cat([k["user_id"].values()[m > 0] for p in parts for k, _, m in p])
    np.testing.assert_array_equal(users.numpy(), ref.single[:, 0])
    assert sum(int(m.sum()) for p in parts for _, _, m in p) == split.rows


def test_prefetch_keeps_order_passes_errors_and_stops_when_closed():
    assert list(Prefetch(iter(range(100)), depth=3)) == list(range(100))

    def failing():
        yield 1
        raise ValueError("bad row group")

    it = Prefetch(failing())
    assert next(it) == 1
    with pytest.raises(ValueError, match="bad row group"):
        next(it)
    endless = Prefetch(iter(lambda: 0, 1), depth=2)
    next(endless)
    endless.close()
    assert not endless._thread.is_alive()


@pytest.mark.parametrize("world", [2, 3, 40])  # 40: more ranks than batches, some score nothing
def test_shard_batches_are_one_process_batches_split_between_ranks(dataset, world):
    split = open_split(dataset, "valid")
    one = list(data.shard_batches(split, 50, 0, 1))
    assert sum(len(y) for _, y, _ in one) == split.rows
    parts = [b for r in range(world) for b in data.shard_batches(split, 50, r, world)]
    assert len(parts) == len(one) and all(same(a, b) and bool(m.all()) for a, (*b, m) in zip(one, parts))


def test_a_dropped_unfinished_stream_stops_its_thread():
    import gc
    import time

    it = Prefetch(iter(lambda: 0, 1), depth=2)
    next(it)
    thread = it._thread
    del it
    gc.collect()
    deadline = time.time() + 5
    while thread.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    assert not thread.is_alive()


def test_a_broken_split_file_is_named(dataset, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(dataset, root)
    bad = root / FeatureSpec.read(root).split_files("valid")[0]
    bad.write_bytes(b"not parquet")
    with pytest.raises(ValueError, match=rf"{bad}: cannot read this Parquet file of split 'valid'"):
        open_split(root, "valid")
    bad.unlink()
    with pytest.raises(ValueError, match=rf"{bad}: cannot read"):
        open_split(root, "valid")
