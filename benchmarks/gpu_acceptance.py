"""GPU acceptance: what one GPU does with the paper's model, in one command (< 8 min on an H100-class GPU).

    python benchmarks/gpu_acceptance.py                 # ViT-B/16, 25% masking, on cuda:0; prints one JSON document
    python benchmarks/gpu_acceptance.py --cpu-dry-run   # tiny preset on the CPU: checks the script end to end

Everything goes through usfmae.train.engine.Trainer on one rank (configs/pretrain_vitb16_throughput.yaml, ZeRO
as configured, precision: auto, synthetic 224x224 scans in shards):
  variants     images/s, step time, MFU (usfmae.train.monitor peak table) and peak memory of the training step
               (normalise, mask, forward, backward, DeepSpeed step; a pinned uint8 batch copied in each step,
               no loader) at micro-batches 32, 64 and 128, with and without activation checkpointing, and
               compiled (deepspeed.compile, scope blocks, Inductor) at 64 with and without it; a batch that
               does not fit is reported as out of memory, not as a failure;
  host_syncs   synchronising CUDA calls per step (torch.cuda.set_sync_debug_mode("warn"), counted) at 64;
  loader       images/s one rank's DataLoader (data.num_workers as derived for this node) delivers, against
               the images/s the fastest variant consumes;
  checkpoint   seconds one save holds the training loop (Trainer.save: gather, write, barrier);
  precision    bf16 or fp16, as chosen for this GPU.
Without a usable GPU it exits 2 and says why. Never compare its figures with a projection as if measured: the
projections in benchmarks/README.md are labelled as such.
"""

import argparse
import contextlib
import gc
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, synthetic_shards  # noqa: E402

from usfmae.config import PretrainConfig, load_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GPU = {"config": "configs/pretrain_vitb16_throughput.yaml", "micro": (32, 64, 128), "compiled_micro": 64,
       "compiled_ckpt": (False, True), "images": 2048, "shard_size": 256, "warmup": 3, "steps": 10, "loader_batches": 12, "backend": "inductor"}
CPU_DRY = {"config": "configs/pretrain_tiny.yaml", "micro": (2, 4), "compiled_micro": 4, "compiled_ckpt": (False,),
           "images": 32, "shard_size": 16, "warmup": 1, "steps": 1, "loader_batches": 2, "backend": "aot_eager"}
GIB = 1024**3


def trainer_for(preset: dict, device: str, shards: Path, out: Path, micro: int, ckpt: bool, compiled: bool):
    from usfmae.train.engine import Trainer

    sets = [f"data.shards=[{shards}]", f"output_dir={out}", "masking.ratio=0.25", f"deepspeed.device={device}",
            "deepspeed.global_batch_size=null", f"deepspeed.micro_batch_size={micro}", "deepspeed.grad_accum_steps=1",
            f"deepspeed.activation_checkpointing={str(ckpt).lower()}", f"deepspeed.compile={str(compiled).lower()}",
            f"deepspeed.compile_backend={preset['backend']}", "schedule.max_steps=1000000", "logging.tensorboard=false",
            "logging.image_grid_every=0", "checkpoint.every_steps=1000000", "checkpoint.keep_last=1"]
    if device == "cpu":
        sets.append("data.num_workers=1")
    trainer = Trainer(load_config(PretrainConfig, REPO / preset["config"], sets), 0, 1)
    trainer.build()
    return trainer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fill(batch: torch.Tensor, micro: int) -> torch.Tensor:
    """`micro` images from the loader's first batch, repeated as needed."""
    return batch.repeat(-(-micro // batch.shape[0]), 1, 1, 1)[:micro].contiguous()


def timed_steps(trainer, imgs: torch.Tensor, n: int) -> float:
    """Seconds for n training steps of `imgs` (one micro-batch per step), the device drained at both ends."""
    sync(trainer.device)
    t0 = time.perf_counter()
    for _ in range(n):
        trainer._micro_step(imgs, {"micro": 0}, 0)
    sync(trainer.device)
    return time.perf_counter() - t0


def host_syncs_per_step(trainer, imgs: torch.Tensor, n: int) -> float | None:
    """Synchronising CUDA calls per step, as CUDA's sync debug mode reports them; None on the CPU."""
    if trainer.device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            timed_steps(trainer, imgs, n)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught) / n


def measure_variant(preset: dict, device: str, shards: Path, work: Path, micro: int, ckpt: bool, compiled: bool,
                    batch: torch.Tensor) -> tuple[dict, object]:
    from usfmae.train.monitor import mfu

    out = {"micro_batch": micro, "activation_checkpointing": ckpt, "compile": compiled}
    trainer = None
    try:
        out_dir = work / f"run_{micro}_{'ckpt' if ckpt else 'full'}_{'compiled' if compiled else 'eager'}"
        trainer = trainer_for(preset, device, shards, out_dir, micro, ckpt, compiled)
        imgs = fill(batch, micro)
        if trainer.device.type == "cuda":
            imgs = imgs.pin_memory()
            torch.cuda.reset_peak_memory_stats(trainer.device)
        t0 = time.perf_counter()
        timed_steps(trainer, imgs, preset["warmup"])  # compiles, allocates AdamW state and buckets
        seconds = timed_steps(trainer, imgs, preset["steps"])
        ips = micro * preset["steps"] / seconds
        out.update(warmup_s=round(time.perf_counter() - t0 - seconds, 2), step_ms=round(1e3 * seconds / preset["steps"], 2),
                   images_per_s=round(ips, 1), mfu=mfu(trainer.fwd_flops, ips, 1, trainer.precision),
                   peak_memory_gib=(round(torch.cuda.max_memory_allocated(trainer.device) / GIB, 2)
                                    if trainer.device.type == "cuda" else None))
        if out["mfu"] is not None:
            out["mfu"] = round(out["mfu"], 4)
        return out, trainer
    except torch.cuda.OutOfMemoryError as e:
        out["out_of_memory"] = str(e).splitlines()[0]
        return out, None


def release(trainer) -> None:
    del trainer
    gc.collect()
    torch._dynamo.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def loader_rate(trainer, batches: int) -> dict:
    """Images/s one rank's DataLoader delivers, after its first batch (worker start-up left out)."""
    data = trainer.micro_batches()
    first, _ = next(data)
    t0, n = time.perf_counter(), 0
    for _ in range(batches):
        imgs, _ = next(data)
        n += imgs.shape[0]
    data.close()
    return {"workers": trainer.loader_workers, "workers_from": trainer.workers_from, "micro_batch": first.shape[0],
            "images_per_s": round(n / (time.perf_counter() - t0), 1)}


def checkpoint_stall(trainer) -> float:
    """Seconds Trainer.save() holds the loop (the checkpoint the run would write at this step)."""
    sync(trainer.device)
    t0 = time.perf_counter()
    trainer.save()
    return round(time.perf_counter() - t0, 3)


def run(preset: dict, device: str, work: Path) -> dict:
    start = time.perf_counter()
    shards, _ = synthetic_shards(work, preset["images"], preset["shard_size"])
    probe = trainer_for(preset, device, shards, work / "probe", preset["micro"][0], False, False)
    batch, _ = next(probe.micro_batches())  # uint8 [B, C, H, W], as the loader hands it over
    precision, fwd_flops = probe.precision, probe.fwd_flops
    release(probe)
    report = {"machine": machine_info(), "device": device, "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
              "precision": precision, "model": load_config(PretrainConfig, REPO / preset["config"]).model.preset,
              "mask_ratio": 0.25, "forward_gflops_per_image": round(fwd_flops / 1e9, 3), "variants": []}
    plan = [(m, c, False) for m in preset["micro"] for c in (False, True)]
    plan += [(preset["compiled_micro"], c, True) for c in preset["compiled_ckpt"]]
    for micro, ckpt, compiled in plan:
        result, trainer = measure_variant(preset, device, shards, work, micro, ckpt, compiled, batch)
        report["variants"].append(result)
        print(f"[gpu_acceptance] {json.dumps(result)}", file=sys.stderr, flush=True)
        if trainer is not None and micro == preset["compiled_micro"] and not ckpt and not compiled:
            report["host_syncs_per_step"] = host_syncs_per_step(trainer, fill(batch, micro), preset["steps"])
            report["checkpoint_stall_s"] = checkpoint_stall(trainer)
            report["loader"] = loader_rate(trainer, preset["loader_batches"])
        if trainer is not None:
            release(trainer)
    consumes = max((v["images_per_s"] for v in report["variants"] if "images_per_s" in v), default=None)
    report["loader"] = {**report.get("loader", {}), "gpu_consumes_images_per_s": consumes}
    delivered = report["loader"].get("images_per_s")
    report["loader"]["keeps_up"] = None if not (consumes and delivered) else delivered >= consumes
    report.setdefault("host_syncs_per_step", None)
    report.setdefault("checkpoint_stall_s", None)
    report["elapsed_s"] = round(time.perf_counter() - start, 1)
    return report


def measure(args) -> dict | None:
    """The report; None (after saying why) when the GPU or its driver is not supported."""
    from usfmae.config import ConfigError
    from usfmae.train.device import DeviceError

    from train import single_rank_group

    single_rank_group()
    with tempfile.TemporaryDirectory(prefix="usfmae_gpu_acceptance_") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        try:
            return run(CPU_DRY if args.cpu_dry_run else GPU, "cpu" if args.cpu_dry_run else "cuda", work)
        except (DeviceError, ConfigError) as e:  # an unsupported GPU or driver: the message says what is supported
            print(f"error: {e}", file=sys.stderr)
            return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-dry-run", action="store_true", help="tiny preset, tiny sizes, on the CPU (no GPU figure)")
    ap.add_argument("--work", help="folder for the synthetic shards and run directories (default: a temporary one)")
    args = ap.parse_args(argv)
    if not args.cpu_dry_run and not torch.cuda.is_available():
        from usfmae.train.device import cuda_report

        print("error: gpu_acceptance measures a CUDA GPU and this machine has none torch can use:\n  "
              f"{cuda_report()}\n--cpu-dry-run runs the script end to end on the CPU with a tiny model "
              "(its figures say nothing about a GPU)", file=sys.stderr)
        return 2
    # stdout is the JSON alone: DeepSpeed's logger (bound to the stdout of its import) and the Trainer's
    # progress lines go to stderr
    with contextlib.redirect_stdout(sys.stderr):
        report = measure(args)
    if report is None:
        return 2
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
