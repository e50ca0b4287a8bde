"""The wheel holds only nmtrec/... (no top-level `components`, `models`, `pipelines`, no benchmarks or
tests), and every module of the source tree is in it: the package list is found, not written down."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from nmtrec.pipelines.import_graph import module_files

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_exactly_the_nmtrec_package(tmp_path):
    src = tmp_path / "src"  # a clean copy: an in-tree build/ folder could carry stale modules
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "runs", "*.egg-info",
                                                             "__pycache__", ".kfp-cache"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(src)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("nmtrec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    outside = [n for n in names if not n.startswith(("nmtrec/", "nmtrec-"))]
    assert outside == []
    modules = {n[:-3].replace("/", ".").removesuffix(".__init__") for n in names if n.endswith(".py")}
    assert modules == set(module_files())
    assert not any(m.startswith(("nmtrec.benchmarks", "nmtrec.tests")) for m in modules)
