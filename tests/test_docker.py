"""The images in docker/: hadolint-clean, and every version they install agrees with the code's pins."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = [ROOT / "docker" / "Dockerfile.cpu", ROOT / "docker" / "Dockerfile.gpu"]


def pins(*files: str) -> dict[str, str]:
    out = {}
    for f in files:
        for line in (ROOT / f).read_text().splitlines():
            m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s#]+)", line.strip())
            if m:
                out[m.group(1).lower()] = m.group(2)
    return out


def run_commands(dockerfile: Path) -> list[str]:
    """The shell commands of every RUN instruction (continuations joined, split on &&)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    cmds = []
    for line in text.splitlines():
        if line.startswith("RUN "):
            cmds += [c.strip() for c in line[4:].split("&&")]
    return cmds


def test_hadolint_clean():
    hadolint = Path(sys.executable).with_name("hadolint")
    done = subprocess.run([str(hadolint), *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_install_the_pinned_requirement_files(dockerfile):
    cmds = " ".join(run_commands(dockerfile))
    # no version typed into a Dockerfile: they come from the requirement files
    assert not re.search(r"\b[a-z0-9_\-]+==[0-9]", cmds), cmds
    assert "-r requirements-torch.txt" in cmds
    assert "pip install --no-deps -r requirements-torchrec.txt" in cmds
    assert "-c requirements-torch.txt" in cmds  # nothing may move torch afterwards
    assert "pip install --no-deps ." in cmds  # the project itself


def test_cpu_image_python_matches_the_project():
    base = re.search(r"^FROM python:(\d+\.\d+)", DOCKERFILES[0].read_text(), re.M).group(1)
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f">={base}" in requires and sys.version.startswith(base)


def test_gpu_image_derives_matching_cuda_fbgemm(tmp_path):
    text = DOCKERFILES[1].read_text()
    cuda = re.search(r"^FROM nvidia/cuda:(\d+)\.(\d+)\.\d+-", text, re.M)
    assert re.search(rf"^ARG CUDA_TAG=cu{cuda.group(1)}{cuda.group(2)}$", text, re.M)
    assert re.search(r"apt-get install .*python3\.11\b", " ".join(run_commands(DOCKERFILES[1])))
    # run the image's own file edits on the real requirement files
    (tmp_path / "requirements.txt").write_text((ROOT / "requirements.txt").read_text())
    for cmd in run_commands(DOCKERFILES[1]):
        if cmd.startswith(("sed ", "grep ")):
            subprocess.run(cmd, shell=True, cwd=tmp_path, check=True)
    cpu = pins("requirements.txt")
    gpu = pins(str(tmp_path / "requirements-gpu.txt"), str(tmp_path / "requirements-fbgemm.txt"))
    torchrec = pins("requirements-torchrec.txt")["torchrec"]
    assert gpu["fbgemm-gpu"] == cpu["fbgemm-gpu-cpu"] == torchrec  # fbgemm and torchrec release together
    assert "fbgemm-gpu-cpu" not in gpu
    assert {k: v for k, v in gpu.items() if k != "fbgemm-gpu"} == {k: v for k, v in cpu.items()
                                                                   if k != "fbgemm-gpu-cpu"}


def test_pins_agree_with_the_installed_environment_and_image_tags():
    import importlib.metadata as md

    from nmtrec.components.common.cluster import ClusterConfig
    from nmtrec.pipelines.pipeline import DEFAULT_IMAGE

    for name, version in pins("requirements.txt", "requirements-torch.txt", "requirements-torchrec.txt").items():
        assert md.version(name).split("+")[0] == version, name
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    cc = ClusterConfig()
    for image in (DEFAULT_IMAGE, cc.image, cc.gpu_image):
        assert image.endswith(f":{project}"), image
