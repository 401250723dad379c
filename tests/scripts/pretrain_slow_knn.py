"""launch/pretrain.py with a k-NN monitor that cannot finish before training has logged step $KNN_WAIT_STEP.

Run under the real deepspeed launcher by tests/e2e/test_pretrain_knn.py: if the monitor held any rank, training
could never reach that step (the wait gives up after 10 minutes and the measurement is then reported failed).
"""

import json
import os
import runpy
import sys
import time
from pathlib import Path

import usfmae.eval.probe as probe

_real = probe.monitor_knn


def logged(metrics: Path, step: int) -> bool:
    lines = metrics.read_text().splitlines() if metrics.exists() else []
    return any(r.get("step") == step and "loss" in r for r in map(json.loads, lines))


def slow_monitor(model, labeled_dir, **kwargs):
    metrics, step = Path(os.environ["KNN_WAIT_FOR"]), int(os.environ["KNN_WAIT_STEP"])
    deadline = time.time() + 600
    while not logged(metrics, step):
        if time.time() > deadline:
            raise TimeoutError(f"training never logged step {step} while the monitor ran")
        time.sleep(0.2)
    return _real(model, labeled_dir, **kwargs)


probe.monitor_knn = slow_monitor
sys.argv[0] = str(Path(__file__).resolve().parents[2] / "launch" / "pretrain.py")
runpy.run_path(sys.argv[0], run_name="__main__")
