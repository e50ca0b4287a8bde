"""Installs the design card's top-level folders as one namespace: components/ -> nmtrec.components,
models/ -> nmtrec.models, pipelines/ -> nmtrec.pipelines (metadata: pyproject.toml). The package list
is found, not written down; benchmarks/ and tests/ stay out of the wheel."""
from setuptools import find_packages, setup

ROOTS = ("components", "models", "pipelines")

setup(
    packages=[f"nmtrec.{p}" for p in find_packages(include=[p for r in ROOTS for p in (r, f"{r}.*")])],
    package_dir={f"nmtrec.{r}": r for r in ROOTS},
)
