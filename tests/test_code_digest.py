"""kfp.local's cache key covers every project module a step's component reaches through its imports,
found from the import graph (no hand-written list): editing a module that a step imports only
indirectly reruns that step, and leaves the steps that never reach it cached."""
import shutil

import pytest

from nmtrec.pipelines import import_graph, reuse

TRAIN, EVALUATE, GENERATE = ("nmtrec.components.train.component", "nmtrec.components.evaluate.component",
                             "nmtrec.components.generate.component")


@pytest.fixture
def source_copy(tmp_path, monkeypatch):
    """The package's sources copied to tmp_path, with the import graph reading the copy."""
    roots = {}
    for name, root in import_graph.ROOTS.items():
        roots[name] = tmp_path / name
        shutil.copytree(root, roots[name], ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(import_graph, "ROOTS", roots)
    import_graph.graph.cache_clear()
    yield roots
    import_graph.graph.cache_clear()


def _edit(path):
    path.write_text(path.read_text() + "\n# edited\n")
    import_graph.graph.cache_clear()


def test_indirect_import_changes_the_digest(source_copy):
    before = {m: reuse.code_digest(m) for m in (TRAIN, EVALUATE, GENERATE)}
    # metrics.py is reached by the train step only through launch -> stage -> audit
    assert "nmtrec.components.common.metrics" not in import_graph.graph()[TRAIN]
    _edit(source_copy["nmtrec.components"] / "common" / "metrics.py")
    after = {m: reuse.code_digest(m) for m in (TRAIN, EVALUATE, GENERATE)}
    assert after[TRAIN] != before[TRAIN] and after[EVALUATE] != before[EVALUATE]
    assert after[GENERATE] == before[GENERATE]


def test_model_code_reruns_training_and_evaluation_not_data_steps(source_copy):
    before = {m: reuse.code_digest(m) for m in (TRAIN, EVALUATE, GENERATE)}
    _edit(source_copy["nmtrec.models"] / "ple.py")
    after = {m: reuse.code_digest(m) for m in (TRAIN, EVALUATE, GENERATE)}
    assert after[TRAIN] != before[TRAIN] and after[EVALUATE] != before[EVALUATE]
    assert after[GENERATE] == before[GENERATE]
