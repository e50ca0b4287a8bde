"""requirements.lock pins every distribution of the environment and agrees with the top-level pins
(.ci/lock.py; `make lock-check` runs the same checks from .ci/run)."""
import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("nmtrec_lock_script", ROOT / ".ci" / "lock.py")
lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock)


def test_top_level_pins_are_in_the_lock():
    assert lock.check_pins() == []
    pins = lock.read_pins(ROOT / lock.LOCK)
    assert pins["torch"] == "2.13.0" and pins["torchrec"] == "1.8.0" and pins["fbgemm-gpu-cpu"] == "1.8.0"
    assert "fbgemm-gpu" not in pins  # the CUDA build: never installed
    assert "numpy" in pins and "setuptools" in pins  # transitive dependencies are pinned too


def test_environment_is_exactly_the_lock():
    """Every installed distribution (but pip and nmtrec itself) is in the lock at its version, and every
    declared dependency of every installed package is locked (pip check, but for torchrec's fbgemm-gpu)."""
    problems = lock.check_environment()
    assert problems == [], "\n".join(problems)


def _root_with(root, edit):
    """A copy of the requirements files and the lock in root, the lock edited."""
    root.mkdir()
    for f in (*lock.RESOLVED, *lock.NO_DEPS, lock.LOCK):
        shutil.copy(ROOT / f, root / f)
    path = root / lock.LOCK
    path.write_text(edit(path.read_text()))
    return root


def test_checks_catch_a_stale_or_incomplete_lock(tmp_path):
    stale = _root_with(tmp_path / "a", lambda t: t.replace("apache-beam==2.77.0", "apache-beam==2.76.0"))
    assert any("apache-beam==2.77.0 but" in p for p in lock.check_pins(stale))
    incomplete = _root_with(tmp_path / "b", lambda t: "".join(x for x in t.splitlines(keepends=True)
                                                              if not x.startswith("numpy==")))
    problems = lock.check_environment(incomplete)
    assert any("numpy" in p and "installed but not in" in p for p in problems)
    assert any("requires" in p and "numpy" in p for p in problems)  # e.g. pandas, scipy, torchrec need it


def test_read_pins_rejects_unpinned_lines(tmp_path):
    (tmp_path / "r.txt").write_text("# comment\nfoo==1.0  # why\nbar>=2\n")
    with pytest.raises(ValueError, match="r.txt:3"):
        lock.read_pins(tmp_path / "r.txt")
