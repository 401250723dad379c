"""The package installed from a wheel into a fresh environment works outside the repository: every `usfmae`
command (build-shards, clean, pretrain --dry-run and under the deepspeed launcher, finetune, export, inspect,
doctor), configs by packaged name (`--config pretrain_tiny`), the packaged dataset registry.

Dependencies are shared, not reinstalled: the fresh venv gets the wheel alone (`pip install --no-deps`) and
a .pth file listing the test interpreter's site-packages, so torch, Ray, DeepSpeed... are importable without
minutes of copying or any download (the machine has no internet). A directory named in a .pth is added to
sys.path, but the .pth files inside it are not executed: the shared venv's editable install of usfmae (its
finder, activated by a .pth there) stays off, and `usfmae` can only come from the wheel, which the test checks
(usfmae.__file__ inside the fresh venv). Nothing runs from the repository: the commands run in a temporary
folder with a clean environment (no PYTHONPATH).
"""

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from usfmae.ports import free_port
from usfmae.testing.ray_local import auth_env

from helpers import REPO, run

pytestmark = pytest.mark.slow

# what the wheel is built from (copied first, so the build leaves no build/ or egg-info in the checkout)
SOURCES = ["pyproject.toml", "README.md", "usfmae", "configs"]


def copy_sources(dest: Path) -> Path:
    """The files a wheel is built from, copied to `dest` (the build writes build/ and egg-info beside them)."""
    dest.mkdir(parents=True)
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, dest / name, symlinks=True,  # usfmae/configs: a symlink to ../configs
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(REPO / name, dest / name)
    return dest


def fresh_venv(venv: Path) -> Path:
    """A venv without packages but a .pth naming this interpreter's site-packages (the shared dependencies)."""
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    purelib = subprocess.run([venv / "bin/python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "shared_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv


def pip_install(venv: Path, *args) -> None:
    # without PYTHONPATH: pip would count a usfmae importable from there as installed already
    no_path = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run([sys.executable, "-m", "pip", "--python", venv / "bin/python", "install", "--no-deps", "-q", *args],
        env=no_path)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel of this checkout installed; returns its bin/ folder."""
    root = tmp_path_factory.mktemp("wheel")
    src = copy_sources(root / "src")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", root / "dist", src])
    wheel, = (root / "dist").glob("usfmae-*.whl")
    venv = fresh_venv(root / "venv")
    pip_install(venv, wheel)
    # the deepspeed launcher, as installing deepspeed into this venv would write it (for --nproc)
    launcher = venv / "bin/deepspeed"
    launcher.write_text(f"#!{venv / 'bin/python'}\nfrom deepspeed.launcher.runner import main\n\nmain()\n")
    launcher.chmod(0o755)
    return venv / "bin"


def clean_env(bin_dir: Path) -> dict:
    """No PYTHONPATH, no inherited settings: the venv's bin/ and the system's, HOME, Ray's token auth."""
    env = {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
           "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}
    return auth_env({**env, **{k: v for k, v in os.environ.items() if k.startswith("RAY_AUTH")}})


def test_the_wheel_runs_build_shards_and_a_dry_run_outside_the_repository(installed, tmp_path):
    env, cwd = clean_env(installed), tmp_path / "elsewhere"
    cwd.mkdir()
    where = run([installed / "python", "-c", "import usfmae, usfmae.config as c, usfmae.registry as r; "
                 "print(usfmae.__file__); print(c.packaged_configs()); print(r.load_registry().name)"],
                cwd=cwd, env=env).stdout.split()
    venv = installed.parent
    assert Path(where[0]).is_relative_to(venv) and Path(where[1]).is_relative_to(venv), where
    assert where[2] == "OpenUS-46"
    assert "build-shards" in run([installed / "usfmae", "--help"], cwd=cwd, env=env).stdout

    # a few synthetic scans (a noisy sector on black): 8 distinct images -> 8 samples
    corpus = cwd / "corpus"
    for i in range(8):
        write_scan(corpus / f"scan{i}.png", seed=i)
    run([installed / "usfmae", "build-shards", "--input", corpus, "--output", cwd / "shards", "--shard-size", "4",
         "--no-clean"], cwd=cwd, env=env)
    manifest = json.loads((cwd / "shards/manifest.json").read_text())
    assert manifest["total_samples"] == 8, manifest
    assert "shards: 8 samples in 2 shards" in run([installed / "usfmae", "inspect", "shards"], cwd=cwd, env=env).stdout

    tiny = ["--config", "pretrain_tiny", "--shards", "shards", "--set", "deepspeed.micro_batch_size=2"]
    plan = json.loads(run([installed / "usfmae", "pretrain", "--dry-run", "--nproc", "2", *tiny],
                          cwd=cwd, env=env).stdout)
    assert plan["world_size"] == 2 and plan["samples_per_source"] == [8] and plan["steps_per_epoch"] == 2, plan
    assert plan["deepspeed_config"]["train_micro_batch_size_per_gpu"] == 2

    # two CPU ranks under the deepspeed launcher, which runs the packaged module (no launch/ script here)
    proc = run([installed / "usfmae", "pretrain", "--nproc", "2", "--master-port", free_port(), "--cpu", *tiny,
                "--set", "data.num_workers=0", "--output", "run", "--max-steps", "1"], cwd=cwd, env=env)
    assert "--module usfmae.commands.pretrain" in proc.stderr
    run([installed / "usfmae", "export", "--checkpoint", "run", "--format", "timm", "--out", "enc.safetensors"],
        cwd=cwd, env=env)
    assert (cwd / "enc.safetensors").stat().st_size > 0

    data = cwd / "labeled"
    for label, name in enumerate(("benign", "malignant")):
        for i in range(5):
            write_scan(data / name / f"{i}.png", seed=100 * (label + 1) + i)
    run([installed / "usfmae", "finetune", "--config", "finetune_tiny", "--checkpoint", "run/model.safetensors",
         "--data", "labeled", "--output", "ft", "--set", "epochs=1", "--set", "batch_size=4",
         "--set", "save_model=false"], cwd=cwd, env=env)
    assert json.loads((cwd / "ft/metrics.json").read_text())["n_train"] == 8

    run([installed / "usfmae", "clean", "--input", "corpus", "--output", "qa", "--config", "build_example"],
        cwd=cwd, env=env)
    assert len(json.loads((cwd / "qa/report.json").read_text())["read"]) == 8
    doctor = subprocess.run([installed / "usfmae", "doctor"], cwd=cwd, env=env, capture_output=True, text=True)
    assert doctor.returncode in (0, 1) and "ray " in doctor.stdout, doctor  # 1: a check failed on this machine


def write_scan(path: Path, seed: int) -> None:
    """A 128x96 grey PNG: a noisy fan-shaped sector on black, distinct per seed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros((96, 128), np.uint8)
    cv2.ellipse(image, (64, 0), (90, 90), 0, 45, 135, 255, -1)
    noise = np.random.default_rng(seed).integers(40, 200, image.shape, dtype=np.uint8)
    cv2.imwrite(str(path), np.where(image > 0, noise, 0).astype(np.uint8))


def test_an_editable_install_finds_the_packaged_configs(tmp_path):
    """`pip install -e` (make setup, the Docker images): configs and the registry come from the checkout."""
    src, venv = copy_sources(tmp_path / "src"), fresh_venv(tmp_path / "venv")
    pip_install(venv, "--no-build-isolation", "-e", src)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    out = run([venv / "bin/python", "-c", "import usfmae, usfmae.config as c, usfmae.registry as r; "
               "print(usfmae.__file__); print(c.config_path('pretrain_tiny')); print(r.load_registry().name)"],
              cwd=cwd, env=clean_env(venv / "bin")).stdout.split()
    assert out == [str(src / "usfmae/__init__.py"), str(src / "usfmae/configs/pretrain_tiny.yaml"), "OpenUS-46"]
