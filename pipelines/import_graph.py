"""The project's own import graph, read from the source (AST, nothing is imported): which nmtrec modules
each module imports, at the top or inside a function. The local cache keys each step by the sources of
every module its component can reach; the layering test walks the same graph."""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import nmtrec.components
import nmtrec.models
import nmtrec.pipelines

PACKAGE = "nmtrec"
ROOTS = {f"{PACKAGE}.{p.__name__.rsplit('.', 1)[1]}": Path(p.__file__).parent
         for p in (nmtrec.components, nmtrec.models, nmtrec.pipelines)}


def module_files() -> dict[str, Path]:
    """Module name -> source file, for every module of the installed package."""
    out = {}
    for root_name, root in ROOTS.items():
        for f in sorted(root.rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([root_name, *parts])] = f
    return out


def _imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    return names


@lru_cache(maxsize=None)
def graph() -> dict[str, frozenset[str]]:
    """Module -> the nmtrec modules it imports (a name that is not a module counts as its package)."""
    files = module_files()
    out = {}
    for module, path in files.items():
        names = _imported(ast.parse(path.read_text(), str(path)), module, path.name == "__init__.py")
        deps = set()
        for name in names:
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module:
                deps.add(name)
        out[module] = frozenset(deps)
    return out


def reachable(module: str) -> list[str]:
    """`module` and every nmtrec module it reaches, with the packages that hold them (their __init__ runs)."""
    g, seen, todo = graph(), set(), [module]
    while todo:
        m = todo.pop()
        if m in seen or m not in g:
            continue
        seen.add(m)
        todo += list(g[m])
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(2, len(parts))]
    return sorted(seen)
