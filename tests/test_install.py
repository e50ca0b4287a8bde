"""The pinned stack imports and works on this machine (CPU)."""
import importlib.metadata as md

import torch


def test_pinned_versions():
    assert torch.__version__.startswith("2.13.0")
    assert md.version("torchrec") == "1.8.0"
    assert md.version("fbgemm-gpu-cpu") == "1.8.0"
    assert md.version("kfp") == "2.17.0"
    assert md.version("apache-beam") == "2.77.0"
    # the CUDA build of fbgemm-gpu must not be installed: it breaks `import torchrec` on CPU
    try:
        md.version("fbgemm-gpu")
        raise AssertionError("fbgemm-gpu (CUDA build) is installed")
    except md.PackageNotFoundError:
        pass


def test_fbgemm_op_and_ebc():
    import fbgemm_gpu  # noqa: F401  registers torch.ops.fbgemm
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

    cumsum = torch.ops.fbgemm.asynchronous_complete_cumsum(torch.tensor([1, 2, 3]))
    assert cumsum.tolist() == [0, 1, 3, 6]
    ebc = EmbeddingBagCollection(tables=[EmbeddingBagConfig(name="t", embedding_dim=4, num_embeddings=10,
                                                            feature_names=["f"])])
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f"], values=torch.tensor([1, 2, 3]), lengths=torch.tensor([2, 1]))
    pooled = ebc(kjt)["f"]
    w = ebc.embedding_bags["t"].weight
    torch.testing.assert_close(pooled, torch.stack([w[1] + w[2], w[3]]))


def test_beam_and_kfp_import():
    import apache_beam as beam
    from kfp import dsl, local  # noqa: F401

    with beam.Pipeline(runner="DirectRunner") as p:
        out = p | beam.Create([1, 2, 3]) | beam.CombineGlobally(sum)
        from apache_beam.testing.util import assert_that, equal_to
        assert_that(out, equal_to([6]))
