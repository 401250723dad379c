"""Masking cost per batch: random vs BUS-M2AE multi-scale token masks vs feature masks, vectorised and before.

    python benchmarks/masking.py                   # batch 64, 14x14 grid (ViT-B/16), 25%: ~1 minute
    python benchmarks/masking.py --ratio 0.75 --threads 2

In one process, one batch of each in turn per round (so load from other jobs on the machine hits them
alike), on --device (default cpu):
  random                        masking.random_mask (the paper's), the baseline
  multiscale                    multiscale.multiscale_mask, scales 1/2/4, the vectorised sampler
  feature_depth                 multiscale.feature_block_mask for one encoder depth: blocks of 1/2 covering
                                --feature-rate of the grid, gathered to the visible tokens
  multiscale_per_sample_before  the sampler before vectorisation (tests/masking_reference.py: a Python loop
                                per sample on the CPU, then copied to the device)
  feature_depth_per_sample_before  the same for one feature-masked depth
Each figure is the median over rounds of the time per batch (a round times several batches of the fast
methods back to back), wall clock and the thread's CPU time; `x_random` divides by random's figure of the
same run. `aten_ops` counts the non-view ATen operators one batch dispatches: on a GPU, where tensors this
small cost about one kernel launch per operator, it is the figure that carries over (not measured here).
Target (issue 12): multi-scale and feature masks at most 5x a random mask. Prints one JSON document.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from common import machine_info  # noqa: E402
from masking_reference import reference_feature_block_mask, reference_multiscale_mask  # noqa: E402

from usfmae.model import num_masked, random_mask  # noqa: E402
from usfmae.model.multiscale import feature_block_mask, multiscale_mask  # noqa: E402

TARGET_X_RANDOM = 5.0


class OpCounter(TorchDispatchMode):
    """Counts the non-view ATen operators dispatched inside the `with` block."""

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += not func.is_view
        return func(*args, **(kwargs or {}))


def aten_ops(fn) -> int:
    with OpCounter() as counter:
        fn()
    return counter.ops


def timed(fn, calls: int, device: torch.device) -> tuple[float, float]:
    """(wall seconds, thread CPU seconds) per call, over `calls` back-to-back calls."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(calls):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - wall) / calls, (time.thread_time() - cpu) / calls


def run(batch: int, grid: int, ratio: float, feature_rate: float, rounds: int, device: torch.device) -> dict:
    patches = grid * grid
    torch.manual_seed(0)
    # the visible tokens of a batch masked at `ratio`, in patch order, as the encoder has them: [N, L_keep]
    visible = patches - num_masked(patches, ratio)
    mask = random_mask(batch, patches, ratio, device=device)
    ids_keep = torch.argsort(mask.to(torch.int8), dim=1, stable=True)[:, :visible]
    methods = {  # name -> (one batch, batches per round)
        "random": (lambda: random_mask(batch, patches, ratio, device=device), 20),
        "multiscale": (lambda: multiscale_mask(batch, patches, ratio, device=device, scales=(1, 2, 4)), 20),
        "feature_depth": (lambda: feature_block_mask(ids_keep, patches, feature_rate, (1, 2)), 20),
        "multiscale_per_sample_before": (
            lambda: reference_multiscale_mask(batch, patches, ratio, device=device, scales=(1, 2, 4)), 1),
        "feature_depth_per_sample_before": (
            lambda: reference_feature_block_mask(ids_keep, patches, feature_rate, (1, 2)), 1),
    }
    for fn, _ in methods.values():  # warm-up: allocator, kernels
        fn()
    samples = {name: [] for name in methods}
    for _ in range(rounds):
        for name, (fn, calls) in methods.items():
            samples[name].append(timed(fn, calls, device))
    ms = {name: {"wall": statistics.median(w for w, _ in s) * 1e3, "cpu": statistics.median(c for _, c in s) * 1e3}
          for name, s in samples.items()}
    result = {}
    for name, m in ms.items():
        result[name] = {"ms_per_batch_wall": round(m["wall"], 3), "ms_per_batch_cpu": round(m["cpu"], 3),
                        "x_random_wall": round(m["wall"] / ms["random"]["wall"], 2),
                        "x_random_cpu": round(m["cpu"] / ms["random"]["cpu"], 2),
                        "aten_ops": aten_ops(methods[name][0])}
    for name in ("multiscale", "feature_depth"):
        before = ms[f"{name}_per_sample_before"]["cpu"]
        result[name]["speedup_vs_before_cpu"] = round(before / ms[name]["cpu"], 1)
        result[name]["meets_target"] = max(result[name]["x_random_wall"], result[name]["x_random_cpu"]) \
            <= TARGET_X_RANDOM
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64, help="images per batch")
    ap.add_argument("--grid", type=int, default=14, help="patch grid side (14: 224 px, 16 px patches)")
    ap.add_argument("--ratio", type=float, default=0.25, help="token mask ratio (the paper's 0.25)")
    ap.add_argument("--feature-rate", type=float, default=0.2, help="feature masking: fraction of the grid")
    ap.add_argument("--rounds", type=int, default=30, help="rounds of one batch of each method")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    report = {"benchmark": "masking cost per batch", "machine": machine_info(), "device": str(device),
              "threads": args.threads, "batch": args.batch, "grid": args.grid, "ratio": args.ratio,
              "feature_rate": args.feature_rate, "rounds": args.rounds, "target_x_random": TARGET_X_RANDOM,
              "results": run(args.batch, args.grid, args.ratio, args.feature_rate, args.rounds, device)}
    report["machine"]["load_average_at_end"] = list(os.getloadavg())
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
