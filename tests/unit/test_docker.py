"""The Docker images, checked statically: hadolint, pinned versions against pyproject.toml, the base-image and
torch build arguments (and the torch check the build runs, run here against this torch), non-root users,
firewall-mode settings, and build-context paths that exist. `make docker-test` (docker/test_images.sh) builds
and runs the images with podman; .ci/run calls it where podman can run."""

import re
import subprocess
import sys
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
    return dockerfile_args_in(path.read_text())


def final_stage(path) -> str:
    return re.split(r"^FROM ", path.read_text(), flags=re.M)[-1]


def global_args(path) -> dict[str, str]:
    """ARGs before the first FROM: the only ones a FROM line can use."""
    return dockerfile_args_in(path.read_text().split("\nFROM ", 1)[0])


def dockerfile_args_in(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=\"?([^\"\s]*)\"?", text, re.M))


def torch_check(path) -> str:
    """The Python the build runs after installing torch, as Docker joins the RUN's continued lines."""
    joined = path.read_text().replace("\\\n", "")
    match = re.search(r'python -c "(import sys, torch;[^"]+)"\s+"\$\{TORCH_VERSION\}" "\$\{TORCH_VARIANT\}"', joined)
    assert match, f"{path.name}: no torch check after the torch install"
    return match.group(1)


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
    args = global_args(DOCKERFILES[0])
    cuda = args["CUDA_VERSION"]
    assert cuda.startswith(torch.version.cuda + "."), f"base CUDA {cuda} vs torch built for {torch.version.cuda}"
    assert args["BUILD_BASE_IMAGE"] == "nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU}"  # nvcc for the ops
    assert args["BASE_IMAGE"] == "nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU}"
    assert re.search(r"^FROM \$\{BUILD_BASE_IMAGE\} AS build$", text, re.M)
    assert dockerfile_args(DOCKERFILES[0])["PREBUILD_DS_OPS"] == "1"  # ops compiled unless a site opts out
    for setting in ("DS_ACCELERATOR=cuda", 'DS_BUILD_FUSED_ADAM="${PREBUILD_DS_OPS}"', "TORCH_CUDA_ARCH_LIST=",
                    "--no-build-isolation", "ops['fused_adam'] == ops['cpu_adam'] == want", '"${PREBUILD_DS_OPS}"'):
        assert setting in text
    arches = dockerfile_args(DOCKERFILES[0])["TORCH_CUDA_ARCH_LIST"].replace("+PTX", "").split(";")
    assert "9.0" in arches and all(float(a) >= 7.5 for a in arches)  # CUDA 13 dropped GPUs older than Turing


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_image_is_a_build_argument(dockerfile):
    """A site builds FROM its own mirrored base: BASE_IMAGE (default: the public image) makes the final stage."""
    default = {"Dockerfile.train": "nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU}",
               "Dockerfile.ray": "python:3.11-slim-bookworm"}[dockerfile.name]
    assert global_args(dockerfile)["BASE_IMAGE"] == default
    froms = re.findall(r"^FROM (\S+)", dockerfile.read_text(), re.M)
    assert froms[-1] == "${BASE_IMAGE}"
    assert all(f.startswith("${") for f in froms), f"{dockerfile.name}: a FROM without a build argument: {froms}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_torch_requirement_is_a_build_argument(dockerfile):
    """torch==${TORCH_VERSION}${TORCH_VARIANT}: the PyPI wheel by default (it exists on every index that mirrors
    PyPI), +cpu/+cu130 from TORCH_INDEX_URL when a site asks; torchvision follows the same variant."""
    text = dockerfile.read_text()
    args = dockerfile_args(dockerfile)
    assert args["TORCH_VARIANT"] == "" and args["TORCH_INDEX_URL"] == ""
    assert '"torch==${TORCH_VERSION}${TORCH_VARIANT}" "torchvision==${TORCHVISION_VERSION}${TORCH_VARIANT}"' in text
    assert '${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"}' in text
    variant = {"Dockerfile.ray": "+cpu", "Dockerfile.train": "+cu130"}[dockerfile.name]
    assert f"TORCH_VARIANT={variant}" in text and "download.pytorch.org/whl/" in text  # documented where it applies


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_builds_torch_check_follows_the_requested_variant(dockerfile):
    """The build's check, run against this torch (the PyPI CUDA wheel): it passes for the version and variant
    installed and fails the build for any other."""
    code = torch_check(dockerfile)
    version, _, variant = torch.__version__.partition("+")

    def check(want: str, want_variant: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code, want, want_variant], capture_output=True, text=True)

    assert check(version, "").returncode == 0
    if variant:
        assert check(version, "+" + variant).returncode == 0
    for want, want_variant in ((version, "+cpu" if variant != "cpu" else "+cu130"), ("2.0.0", "")):
        proc = check(want, want_variant)
        assert proc.returncode == 1 and f"{want}{want_variant} asked for" in proc.stderr, proc.stderr


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


def test_ci_builds_and_runs_the_images_after_the_suite_where_podman_can():
    """`make docker-test` runs after `make test` (whose time limit is its own), and only where the script's
    --check says podman can run; both scripts parse."""
    lines = [line.strip() for line in (REPO / ".ci/run").read_text().splitlines() if not line.startswith("#")]
    ci = "\n".join(lines)
    assert lines.index("make test") < lines.index("elif reason=$(bash docker/test_images.sh --check); then") < \
        lines.index("make docker-test")
    assert '"${USFMAE_DOCKER_TEST:-1}" = 0' in ci  # on by default; 0 opts out
    assert 'echo "skipping make docker-test: $reason"' in ci
    assert "bash docker/test_images.sh" in (REPO / "Makefile").read_text()
    for script in ("docker/test_images.sh", "docker/pipeline_smoke.sh"):
        proc = subprocess.run(["bash", "-n", str(REPO / script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"
