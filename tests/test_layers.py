"""Layers point down: contracts (components.common) at the bottom, models beside them, components above,
pipelines on top; no import cycle. Walks every import of the source, top-level and inside functions."""
from nmtrec.pipelines.import_graph import graph, reachable

# what each room may import besides itself (prefixes of module names)
ALLOWED = {
    "nmtrec.components.common": [],
    "nmtrec.models": [],
    "nmtrec.components.generate": ["nmtrec.components.common"],
    "nmtrec.components.preprocess": ["nmtrec.components.common"],
    "nmtrec.components.train": ["nmtrec.components.common", "nmtrec.models"],
    "nmtrec.components.evaluate": ["nmtrec.components.common", "nmtrec.models", "nmtrec.components.train"],
    "nmtrec.components.serve": ["nmtrec.components.common", "nmtrec.models", "nmtrec.components.train",
                                "nmtrec.components.preprocess"],
    "nmtrec.components": [],  # the package itself
    "nmtrec.pipelines": ["nmtrec.components", "nmtrec.models"],
}


def _room(module: str) -> str:
    return max((r for r in ALLOWED if module == r or module.startswith(r + ".")), key=len)


def _inside(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_no_import_points_up():
    bad = []
    for module, deps in graph().items():
        room = _room(module)
        for dep in deps:
            if not any(_inside(dep, p) for p in [room, *ALLOWED[room]]):
                bad.append(f"{module} -> {dep}")
    assert not bad, "imports that point up a layer:\n" + "\n".join(sorted(bad))


def test_no_import_cycle():
    g = graph()
    state, cycles = {}, []

    def visit(m, path):
        state[m] = "open"
        for d in sorted(g[m]):
            if state.get(d) == "open":
                cycles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_graph_sees_nested_imports():
    """The walk is not vacuous: the train component imports its launcher inside the function body, and
    the stage code is reached through it."""
    reach = reachable("nmtrec.components.train.component")
    assert "nmtrec.components.train.launch" in graph()["nmtrec.components.train.component"]
    assert {"nmtrec.components.train.stage", "nmtrec.models.mmoe", "nmtrec.components.common.metrics"} <= set(reach)
    assert not any(m.startswith("nmtrec.pipelines") for m in reach)
