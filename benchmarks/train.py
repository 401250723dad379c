"""Training-engine benchmark: our DeepSpeed engine against a plain PyTorch loop, and activation checkpointing.

    python benchmarks/train.py                      # everything (a few minutes on 2 cores)
    python benchmarks/train.py --base-batch 0       # skip the ViT-B/16 memory runs
    python benchmarks/train.py --no-launcher        # skip the real `deepspeed --num_gpus 1` run

Both sides use the same model preset, batch, seeds, masks, lr schedule, torch fused AdamW with our parameter
groups, gradient clipping at 1.0, one rank (single-process gloo group for DeepSpeed), one torch thread.
  step      training steps on in-memory batches, no data loading: plain loop, plain + activation
            checkpointing, DeepSpeed (the ZeRO-2 config our engine generates), DeepSpeed + checkpointing;
            tiny preset. The four run in one process, one step of each in turn, so load from other jobs
            on the machine hits them alike; throughput = batch / median CPU time of a step.
  e2e       the whole path from our shards: usfmae.train.engine.Trainer (stream, augment, mask, DeepSpeed,
            the finite-loss check, logging) against a plain loop over the same PretrainStream with the same
            seeds, again one step of each in turn in one process (the plain step runs inside a wrapper
            around the Trainer's engine.step).
  memory    peak RSS with and without activation checkpointing, each configuration in a fresh process:
            after a warm-up step (which allocates gradients and AdamW state) freed heap is returned
            (malloc_trim) and the kernel's peak-RSS counter is reset (/proc/self/clear_refs); reported:
            the peak over the next step, and that peak minus the RSS at the reset (the step's gradients,
            activations and temporaries); tiny preset and ViT-B/16 (224x224, the paper's model), whose
            activations are large enough to matter.
  launcher  `deepspeed --num_gpus 1 launch/pretrain.py` on the same shards: images/s (wall clock) from
            metrics.jsonl after the first records, with the config's one data-loader worker process.
Prints one JSON document.
"""

import argparse
import ctypes
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_seconds, machine_info, synthetic_shards  # noqa: E402

from usfmae.config import PretrainConfig, load_config  # noqa: E402
from usfmae.data.stream import PretrainStream, StreamPlan  # noqa: E402
from usfmae.data.transforms import normalize_batch, pretrain_transform  # noqa: E402
from usfmae.model import create_model, get_masking  # noqa: E402
from usfmae.train.optim import build_optimizer  # noqa: E402
from usfmae.train.schedule import lr_at  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "configs" / "pretrain_tiny.yaml"
TINY, BASE = "mae_vit_tiny_patch8", "mae_vit_base_patch16"
RESULT = "RESULT "


# ---------------------------------------------------------------- set-up shared by the runs


def run_config(preset: str, batch: int, steps: int, out_dir: str, shards: str | None = None,
               ckpt: bool = False) -> PretrainConfig:
    """configs/pretrain_tiny.yaml with the run's preset, batch, length and data; logs every step."""
    sets = ["deepspeed.device=cpu", f"model.preset={preset}", f"deepspeed.micro_batch_size={batch}",
            f"schedule.max_steps={steps}", f"deepspeed.cpu_threads={torch.get_num_threads()}",
            f"deepspeed.activation_checkpointing={str(ckpt).lower()}", f"output_dir={out_dir}",
            "data.num_workers=0", "logging.tensorboard=false", "logging.image_grid_every=0",
            "logging.every_steps=1", "checkpoint.every_steps=1000000"]
    if shards:
        sets.append(f'data.shards=["{shards}"]')
    return load_config(PretrainConfig, TINY_CONFIG, sets)


def single_rank_group() -> None:
    """A one-process gloo group on loopback (what the deepspeed launcher sets up for one rank)."""
    import deepspeed
    import torch.distributed as dist

    if dist.is_initialized():
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    deepspeed.init_distributed(dist_backend="gloo", verbose=False)


def fresh_model(cfg: PretrainConfig, ckpt: bool):
    torch.manual_seed(cfg.seed)  # as the Trainer does: every variant starts from the same weights
    model = create_model(cfg.model.preset, mask_ratio=cfg.masking.ratio)
    model.set_grad_checkpointing(ckpt)
    return model


def deepspeed_engine(model, optimizer, cfg: PretrainConfig):
    """deepspeed.initialize with the DeepSpeed config our engine generates (ZeRO-2, clipping, fp32 on CPU)."""
    import deepspeed

    from usfmae.train.ds_config import build_ds_config

    single_rank_group()
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=build_ds_config(cfg, 1, "fp32"))
    return engine


class PlainStep:
    """What the engine does, by hand: forward, backward, clip, AdamW step."""

    def __init__(self, model, optimizer, clip: float):
        self.model, self.optimizer, self.clip = model, optimizer, clip

    def __call__(self, imgs: torch.Tensor, mask: torch.Tensor, lr: float) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = self.model(imgs, mask=mask)[0]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()


class DeepSpeedStep:
    """One step through the DeepSpeed engine, as usfmae.train.engine.Trainer drives it."""

    def __init__(self, engine):
        self.engine = engine

    def __call__(self, imgs: torch.Tensor, mask: torch.Tensor, lr: float) -> float:
        for group in self.engine.optimizer.param_groups:
            group["lr"] = lr
        loss = self.engine(imgs, mask=mask)[0]
        self.engine.backward(loss)
        self.engine.step()
        return loss.item()


def make_step(engine: str, cfg: PretrainConfig, ckpt: bool):
    model = fresh_model(cfg, ckpt)
    o = cfg.optimizer
    optimizer = build_optimizer(model, o.lr, o.weight_decay, o.betas, o.eps, o.impl)
    if engine == "deepspeed":
        return model, DeepSpeedStep(deepspeed_engine(model, optimizer, cfg))
    return model, PlainStep(model, optimizer, cfg.deepspeed.gradient_clipping)


def fixed_inputs(cfg: PretrainConfig, model, step: int, batches: list[torch.Tensor]):
    """(images, mask, lr) of step `step`: the same for every variant."""
    n = cfg.schedule.max_steps
    mask = get_masking(cfg.masking.strategy)(batches[0].shape[0], model.num_patches, cfg.masking.ratio,
                                             generator=torch.Generator().manual_seed(step))
    lr = lr_at(step, n, cfg.optimizer.lr, cfg.schedule.min_lr, round(cfg.schedule.warmup_fraction * n))
    return batches[step % len(batches)], mask, lr


def throughput(batch: int, cpu: list[float], wall: list[float]) -> dict:
    return {"images_per_cpu_s": batch / statistics.median(cpu), "images_per_wall_s": batch / statistics.median(wall),
            "median_step_cpu_s": statistics.median(cpu), "measured_steps": len(cpu)}


# ---------------------------------------------------------------- worker: step throughput, interleaved

VARIANTS = (("plain", False), ("plain", True), ("deepspeed", False), ("deepspeed", True))


def variant_name(engine: str, ckpt: bool) -> str:
    return engine + ("_ckpt" if ckpt else "")


def run_step_interleaved(spec: dict) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cfg = run_config(TINY, spec["batch"], spec["warmup"] + spec["steps"], out)
    steps = {variant_name(e, c): make_step(e, cfg, c) for e, c in VARIANTS}
    model = next(iter(steps.values()))[0]
    size = model.patch_embed.img_size[0]
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(spec["batch"], 3, size, size, generator=gen) for _ in range(2)]
    times = {name: ([], []) for name in steps}
    losses = {name: [] for name in steps}
    for step in range(cfg.schedule.max_steps):
        imgs, mask, lr = fixed_inputs(cfg, model, step, batches)
        for name, (_, fn) in steps.items():
            c0, w0 = cpu_seconds(), time.perf_counter()
            losses[name].append(fn(imgs, mask, lr))
            if step >= spec["warmup"]:
                times[name][0].append(cpu_seconds() - c0)
                times[name][1].append(time.perf_counter() - w0)
    return {name: {**throughput(spec["batch"], *times[name]), "losses": losses[name]} for name in steps}


# ---------------------------------------------------------------- worker: end to end, interleaved


def plain_e2e_steps(cfg: PretrainConfig):
    """A plain loop over the same PretrainStream as the Trainer (same plan, augment seeds, masks, lr);
    yields each step's loss."""
    from usfmae.data.epoch import Segment
    from usfmae.train.engine import _step_seed, seed_generator
    from usfmae.train.plan import make_plan

    plan = make_plan(cfg, 1)
    model = fresh_model(cfg, cfg.deepspeed.activation_checkpointing)
    o = cfg.optimizer
    step_fn = PlainStep(model, build_optimizer(model, plan.peak_lr, o.weight_decay, o.betas, o.eps, o.impl),
                        cfg.deepspeed.gradient_clipping)
    splan = StreamPlan(plan.sources, plan.counts, cfg.seed, cfg.data.shuffle_buffer)
    transform = pretrain_transform(model.patch_embed.img_size[0], cfg.data.augment)
    masking, step, epoch = get_masking(cfg.masking.strategy), 0, 0
    while True:
        segment = Segment.start(epoch, ((0, plan.epoch_samples),), 1, 1, plan.micro_batch, plan.grad_accum)
        for imgs, _ in PretrainStream(splan, segment, transform):
            seed_generator(torch.device("cpu"), _step_seed(cfg.seed, step, 0, 0))
            mask = masking(imgs.shape[0], model.num_patches, cfg.masking.ratio)
            lr = lr_at(step, plan.total_steps, plan.peak_lr, cfg.schedule.min_lr, plan.warmup_steps)
            yield step_fn(normalize_batch(imgs), mask, lr)  # the stream gives uint8, as to the Trainer
            step += 1
        epoch += 1


def run_e2e_interleaved(spec: dict) -> dict:
    """Trainer.train() with its engine.step wrapped: after each Trainer step, one plain step; each timed."""
    from usfmae.train.engine import Trainer

    with tempfile.TemporaryDirectory() as out:
        cfg = run_config(TINY, spec["batch"], spec["warmup"] + spec["steps"], out, spec["shards"])
        single_rank_group()
        trainer = Trainer(cfg, 0, 1)
        trainer.build()
        plain = plain_e2e_steps(cfg)
        times = {"trainer": ([], []), "plain": ([], [])}
        plain_losses, state = [], {"step": 0, "cpu": cpu_seconds(), "wall": time.perf_counter()}
        engine_step = trainer.engine.step

        def record(name: str) -> None:
            cpu, wall = cpu_seconds(), time.perf_counter()
            if state["step"] >= spec["warmup"]:
                times[name][0].append(cpu - state["cpu"])
                times[name][1].append(wall - state["wall"])
            state["cpu"], state["wall"] = cpu, wall

        def interleaved_step(*args, **kwargs):
            result = engine_step(*args, **kwargs)
            record("trainer")  # the Trainer's whole iteration since the last mark: data, mask, fwd, bwd, step
            plain_losses.append(next(plain))
            record("plain")
            state["step"] += 1
            return result

        trainer.engine.step = interleaved_step
        trainer.train()
        records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    trainer_losses = [r["loss"] for r in records if "loss" in r]
    return {"trainer": {**throughput(spec["batch"], *times["trainer"]), "losses": trainer_losses},
            "plain": {**throughput(spec["batch"], *times["plain"]), "losses": plain_losses}}


# ---------------------------------------------------------------- worker: peak memory, one configuration


def _status_mb(field: str) -> float:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) / 1024 if match else float("nan")


def run_memory(spec: dict) -> dict:
    """Peak RSS over `steps` steps after one warm-up step (which allocates gradients and AdamW state).

    peak_rss_mb is what must fit in memory; peak_rss_delta_mb = peak - live set after the warm-up (freed
    heap returned with malloc_trim): the step's gradients, activations and temporaries."""
    with tempfile.TemporaryDirectory() as out:
        cfg = run_config(spec["preset"], spec["batch"], 1 + spec["steps"], out)
    model, fn = make_step(spec["engine"], cfg, spec["ckpt"])
    size = model.patch_embed.img_size[0]
    batches = [torch.randn(spec["batch"], 3, size, size, generator=torch.Generator().manual_seed(1))]
    rss_setup = _status_mb("VmRSS")
    fn(*fixed_inputs(cfg, model, 0, batches))
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so RSS is the live set (weights, AdamW state)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter (VmHWM) to the current RSS
    rss0, c0 = _status_mb("VmRSS"), cpu_seconds()
    for step in range(1, 1 + spec["steps"]):
        fn(*fixed_inputs(cfg, model, step, batches))
    peak = _status_mb("VmHWM")
    return {"rss_after_setup_mb": rss_setup, "rss_after_warmup_step_mb": rss0, "peak_rss_mb": peak,
            "peak_rss_delta_mb": peak - rss0, "cpu_s_per_step": (cpu_seconds() - c0) / spec["steps"]}


def worker(spec: dict) -> None:
    torch.set_num_threads(spec["threads"])
    run = {"step": run_step_interleaved, "e2e": run_e2e_interleaved, "memory": run_memory}[spec["kind"]]
    print(RESULT + json.dumps(run(spec)), flush=True)


# ---------------------------------------------------------------- orchestration


def run_worker(spec: dict) -> dict:
    """One measurement in a fresh interpreter."""
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                          text=True, cwd=REPO, timeout=3600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark run {spec} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len(RESULT):])
    print(f"[train] {spec['kind']} done: {json.dumps(rounded(result))[:300]}", file=sys.stderr, flush=True)
    return result


def run_launcher(shards: Path, batch: int, steps: int, skip_records: int) -> dict:
    """The real launcher on 1 rank; mean images/s of the metrics.jsonl records after the first few."""
    with tempfile.TemporaryDirectory() as out:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "1", "--master_port", str(port),
               str(REPO / "launch" / "pretrain.py"), "--cpu", "--config", str(TINY_CONFIG), "--shards", str(shards),
               "--output", out, "--max-steps", str(steps), "--set", f"deepspeed.micro_batch_size={batch}",
               "--set", "logging.every_steps=5", "--set", "logging.tensorboard=false",
               "--set", "logging.image_grid_every=0", "--set", "checkpoint.every_steps=1000000"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=3600,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        records = [json.loads(ln) for ln in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    kept = [r for r in records if "images_per_s" in r][skip_records:]
    result = {"command": f"OMP_NUM_THREADS=1 deepspeed --num_gpus 1 launch/pretrain.py --config "
                         f"configs/pretrain_tiny.yaml --cpu --max-steps {steps} --set deepspeed.micro_batch_size={batch}",
              "data_loader_workers": 1, "records_used": len(kept),
              "images_per_wall_s": statistics.mean(r["images_per_s"] for r in kept),
              "wall_s_including_start_up": time.perf_counter() - t0,
              "world_size": next(r for r in records if r.get("event") == "start")["world_size"]}
    print(f"[train] launcher: {result['images_per_wall_s']:.1f} img/s wall", file=sys.stderr, flush=True)
    return result


def rounded(x):
    if isinstance(x, float):
        return round(x, 4 if abs(x) < 1 else 1)
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items() if k != "losses"}
    return x


def max_loss_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64, help="tiny-preset batch (default 64, the paper's)")
    ap.add_argument("--steps", type=int, default=12, help="measured steps per variant (default 12)")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up steps per variant (default 3)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--base-batch", type=int, default=4, help="ViT-B/16 memory-run batch (0 = skip; default 4)")
    ap.add_argument("--no-launcher", action="store_true", help="skip the real deepspeed launcher run")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    common = {"threads": args.threads, "warmup": args.warmup, "steps": args.steps, "batch": args.batch}
    report = {"benchmark": "training engine: DeepSpeed vs plain PyTorch, 1 rank, CPU", "machine": machine_info(),
              "settings": {**common, "preset": TINY, "optimizer": "torch AdamW fused",
                           "config": "configs/pretrain_tiny.yaml (ZeRO-2, clip 1.0, fp32 on CPU)"}}

    step = run_worker({"kind": "step", **common})
    report["step"] = rounded(step)
    report["step"]["deepspeed_vs_plain"] = round(step["deepspeed"]["images_per_cpu_s"]
                                                 / step["plain"]["images_per_cpu_s"], 3)
    report["step"]["ckpt_cost"] = {e: round(step[f"{e}_ckpt"]["images_per_cpu_s"] / step[e]["images_per_cpu_s"], 3)
                                   for e in ("plain", "deepspeed")}
    report["step"]["loss_max_abs_diff"] = {
        "deepspeed_vs_plain": max_loss_diff(step["plain"]["losses"], step["deepspeed"]["losses"]),
        "ckpt_vs_not": max_loss_diff(step["plain"]["losses"], step["plain_ckpt"]["losses"])}

    memory_runs = [(TINY, args.batch)] + ([(BASE, args.base_batch)] if args.base_batch else [])
    report["memory"] = {}
    for preset, batch in memory_runs:
        runs = {variant_name(e, c): run_worker({"kind": "memory", "engine": e, "ckpt": c, "preset": preset,
                                                "batch": batch, "steps": 1, "threads": args.threads})
                for e, c in VARIANTS}
        report["memory"][f"{preset}_batch{batch}"] = rounded(runs)

    with tempfile.TemporaryDirectory() as tmp:
        shards, _ = synthetic_shards(Path(tmp), 512, 128)
        e2e = run_worker({"kind": "e2e", "shards": str(shards), **common})
        report["e2e"] = rounded(e2e)
        report["e2e"]["trainer_vs_plain"] = round(e2e["trainer"]["images_per_cpu_s"]
                                                  / e2e["plain"]["images_per_cpu_s"], 3)
        report["e2e"]["loss_max_abs_diff_trainer_vs_plain"] = max_loss_diff(e2e["trainer"]["losses"],
                                                                            e2e["plain"]["losses"])
        if not args.no_launcher:
            report["launcher"] = rounded(run_launcher(shards, args.batch, steps=30, skip_records=2))
    report["load_average_at_end"] = list(os.getloadavg())
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
