"""Plain helpers the tests import (paths, running a command, real scanner files); fixtures live in conftest.py."""

import subprocess
import sys
from pathlib import Path

import pytest

from usfmae.cleaning.evaluate import real_us_folder

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(cmd, timeout=600, **kw) -> subprocess.CompletedProcess:
    """Run a command, failing the test with its output when it exits non-zero."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}"
                    f"\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def cpu_ranks_run(precision: str):
    """Mark for a test whose CPU ranks train in `precision`: skipped where DeepSpeed's accelerator lacks it
    (fp16 needs native fp16 instructions), as the trainer would refuse it there."""
    from usfmae.train.device import cpu_supports

    return pytest.mark.skipif(not cpu_supports(precision), reason=f"DeepSpeed's accelerator reports "
                              f"is_{precision}_supported() false on this CPU: CPU ranks cannot train in {precision}")


def real_us_file(name: str) -> Path:
    """One real ultrasound file, or skip the test saying where it was looked for."""
    folder, where = real_us_folder(REPO)
    if folder is None or not (folder / name).is_file():
        pytest.skip(f"real ultrasound file {name} not found ({where})")
    return folder / name


def real_set(name: str) -> Path:
    """A real data set of ../shared/real_sets (BUS-BRA, POCUS), or skip the test saying where it was looked for."""
    folder = REPO.parent / "shared" / "real_sets" / name
    if not folder.is_dir():
        pytest.skip(f"real data set {name} not found at {folder} (development machines only; never copied here)")
    return folder


def checkpoint_digest(path):
    """Digest of a tiny-preset run checkpoint's trained weights and AdamW state (train.fullstate.digest)."""
    from usfmae.checkpoint import read_run_checkpoint
    from usfmae.model import create_model
    from usfmae.train.fullstate import FullState, digest

    state, weights, moments = read_run_checkpoint(path)
    trainable = {n for n, p in create_model("mae_vit_tiny_patch8").named_parameters() if p.requires_grad}
    return digest(FullState({n: weights[n] for n in trainable}, moments, state["adam_step"]))
