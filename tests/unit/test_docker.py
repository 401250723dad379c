"""The Docker images, checked statically (no Docker engine here): hadolint, pinned versions against
pyproject.toml, non-root users, firewall-mode settings, and build-context paths that exist."""

import re
import subprocess
import tomllib

import pytest
import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from usfmae.netguard import OFFLINE_ENV

from helpers import BIN, REPO

DOCKERFILES = [REPO / "docker/Dockerfile.train", REPO / "docker/Dockerfile.ray"]
LOCK = REPO / "docker/requirements.lock"


def pyproject_requirements() -> dict[str, Requirement]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {canonicalize_name(r.name): r for r in map(Requirement, deps)}


def lock_versions() -> dict[str, Version]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"{LOCK}: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def dockerfile_args(path) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=\"?([^\"\s]+)\"?", path.read_text(), re.M))


def final_stage(path) -> str:
    return re.split(r"^FROM ", path.read_text(), flags=re.M)[-1]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    proc = subprocess.run([str(BIN / "hadolint"), "--no-color", "--failure-threshold", "style", str(dockerfile)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_lock_satisfies_every_pyproject_dependency():
    pins = lock_versions()
    for name, req in pyproject_requirements().items():
        assert name in pins, f"{name} is a dependency but not pinned in {LOCK.name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} violates {req}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_pins_agree_with_pyproject_and_lock(dockerfile):
    args, reqs, pins = dockerfile_args(dockerfile), pyproject_requirements(), lock_versions()
    for arg, package in {"TORCH_VERSION": "torch", "TORCHVISION_VERSION": "torchvision",
                         "DEEPSPEED_VERSION": "deepspeed"}.items():
        version = Version(args[arg])
        assert reqs[package].specifier.contains(version), f"{dockerfile.name} {arg}={version} vs {reqs[package]}"
        assert version == pins[package], f"{dockerfile.name} {arg}={version} but the lock has {pins[package]}"
    text = dockerfile.read_text()
    assert text.count("--constraint /tmp/requirements.lock") >= 2  # every PyPI install goes through the lock
    for package, version in re.findall(r'"([A-Za-z][\w.-]*)==([\w.${}]+)"', text):
        if "$" not in version:  # literal pins must match the lock too
            assert Version(version) == pins[canonicalize_name(package)], f"{package}=={version}"


def test_training_image_matches_torch_cuda_and_prebuilds_deepspeed_ops():
    text = DOCKERFILES[0].read_text()
    cuda = dockerfile_args(DOCKERFILES[0])["CUDA_VERSION"]
    assert cuda.startswith(torch.version.cuda + "."), f"base CUDA {cuda} vs torch built for {torch.version.cuda}"
    assert re.search(r"FROM nvidia/cuda:\$\{CUDA_VERSION\}-devel-", text)  # nvcc for the ops
    for setting in ("DS_ACCELERATOR=cuda", "DS_BUILD_FUSED_ADAM=1", "TORCH_CUDA_ARCH_LIST=", "--no-build-isolation",
                    "ops['fused_adam']"):
        assert setting in text
    arches = dockerfile_args(DOCKERFILES[0])["TORCH_CUDA_ARCH_LIST"].replace("+PTX", "").split(";")
    assert "9.0" in arches and all(float(a) >= 7.5 for a in arches)  # CUDA 13 dropped GPUs older than Turing


def test_cpu_image_takes_torch_from_the_cpu_index():
    text = DOCKERFILES[1].read_text()
    assert "https://download.pytorch.org/whl/cpu" in text and '"torch==${TORCH_VERSION}+cpu"' in text
    assert "tesseract-ocr" in text and "assert not torch.version.cuda" in text
    assert "DS_BUILD_OPS=0" in text


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_as_a_user_in_firewall_mode_without_secrets(dockerfile):
    stage = final_stage(dockerfile)
    users = re.findall(r"^USER (\S+)", stage, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    for key, value in OFFLINE_ENV.items():
        assert re.search(rf"^\s+{key}={re.escape(value)}(?=\s|$)", stage, re.M), f"{key}={value} not in the image"
    assert "ray_bootstrap_config.yaml" in stage
    for line in dockerfile.read_text().splitlines():
        if re.match(r"(ARG|ENV)\b", line) or line.startswith("    "):
            assert not re.search(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY)\w*=", line, re.I), line


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copied_paths_exist_and_pass_the_dockerignore(dockerfile):
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore  # everything else (.git, .venv, runs, shards, credentials) stays out of the context
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile.read_text(), re.M):
        for src in sources.split():
            assert (REPO / src).exists(), f"{dockerfile.name} copies {src}, which is not in the repository"
            assert src.rstrip("/") in included, f"{src} is excluded by .dockerignore"
