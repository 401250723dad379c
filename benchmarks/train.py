"""Training-engine benchmark: our engine against a plain PyTorch loop, its side work, CPU threads per rank,
activation checkpointing.

    python benchmarks/train.py                      # everything (~25 min on 2 busy cores)
    python benchmarks/train.py --base-batch 0       # skip the ViT-B/16 memory runs
    python benchmarks/train.py --only e2e --rounds 5

Both sides of a comparison use the same model preset, batch, seeds, masks, lr schedule, torch fused AdamW with
our parameter groups, gradient clipping at 1.0, one torch thread. Every comparison is measured side by side
(interleaved step by step in one process, or alternating runs) and repeated in --rounds fresh processes; the
report gives each round's ratio and their median, min and max (the machine is shared: the spread is the noise).
  step      training steps on in-memory batches, no data loading: plain loop, plain + activation
            checkpointing, DeepSpeed with the config our engine generates (one fp32 rank: ZeRO stage 0),
            DeepSpeed with ZeRO-2 forced (what ZeRO's bookkeeping costs a rank), DeepSpeed + checkpointing;
            tiny preset, one step of each in turn; throughput = batch / median CPU time of a step.
  e2e       the whole path from our shards: usfmae.train.engine.Trainer (stream, augment, mask, DeepSpeed,
            the device-side loss accounting, a record every 5 steps) against a plain loop over the same
            PretrainStream with the same seeds: one step of each in turn (the plain step runs inside a wrapper
            around the Trainer's engine.step), timed by the main thread's CPU (each side's window-reading
            thread runs across both sides' steps); and whole runs of each, one after the other, timed by the
            CPU of every thread (reading included).
  side      the Trainer with a checkpoint every 4 steps and a reconstruction grid every 2 against the same run
            without them (alternating in one process): the images/s it logs (checkpoint and grid time left out
            and logged in time/*_s) and the images/s the wall clock gives when they are counted in.
  threads   `deepspeed --num_gpus 2 launch/pretrain.py --cpu` on 2 CPU ranks with the default torch threads per
            rank (cores / local ranks) against deepspeed.cpu_threads = all cores per rank (the old default),
            alternating; images/s from metrics.jsonl after the first records.
  memory    peak RSS with and without activation checkpointing, each configuration in a fresh process:
            after a warm-up step (which allocates gradients and AdamW state) freed heap is returned
            (malloc_trim) and the kernel's peak-RSS counter is reset (/proc/self/clear_refs); reported:
            the peak over the next step, and that peak minus the RSS at the reset (the step's gradients,
            activations and temporaries); tiny preset and ViT-B/16 (224x224, the paper's model).
  launcher  `deepspeed --num_gpus 1 launch/pretrain.py` on the same shards: images/s from metrics.jsonl after
            the first records, with the config's one data-loader worker process.
Prints one JSON document.
"""

import argparse
import ctypes
import json
import os
import re
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
from usfmae.ports import free_port  # noqa: E402
from usfmae.train.optim import build_optimizer  # noqa: E402
from usfmae.optim import lr_at  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "configs" / "pretrain_tiny.yaml"
TINY, BASE = "mae_vit_tiny_patch8", "mae_vit_base_patch16"
RESULT = "RESULT "
RECORD_EVERY = 5  # the Trainer's metrics records in the e2e comparison (configs/pretrain_tiny.yaml's)


# ---------------------------------------------------------------- set-up shared by the runs


def run_config(preset: str, batch: int, steps: int, out_dir: str, shards: str | None = None,
               ckpt: bool = False, *sets: str) -> PretrainConfig:
    """configs/pretrain_tiny.yaml with the run's preset, batch, length and data; a record every 5 steps."""
    sets = ["deepspeed.device=cpu", f"model.preset={preset}", f"deepspeed.micro_batch_size={batch}",
            f"schedule.max_steps={steps}", f"deepspeed.cpu_threads={torch.get_num_threads()}",
            f"deepspeed.activation_checkpointing={str(ckpt).lower()}", f"output_dir={out_dir}",
            "data.num_workers=0", "logging.tensorboard=false", "logging.image_grid_every=0",
            f"logging.every_steps={RECORD_EVERY}", "checkpoint.every_steps=1000000", *sets]
    if shards:
        sets.append(f'data.shards=["{shards}"]')
    return load_config(PretrainConfig, TINY_CONFIG, sets)


def single_rank_group() -> None:
    """A one-process gloo group on loopback (what the deepspeed launcher sets up for one rank)."""
    import deepspeed
    import torch.distributed as dist

    if dist.is_initialized():
        return
    port = free_port()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    deepspeed.init_distributed(dist_backend="gloo", verbose=False)


def fresh_model(cfg: PretrainConfig, ckpt: bool):
    torch.manual_seed(cfg.seed)  # as the Trainer does: every variant starts from the same weights
    model = create_model(cfg.model.preset, mask_ratio=cfg.masking.ratio)
    model.set_grad_checkpointing(ckpt)
    return model


def deepspeed_engine(model, optimizer, cfg: PretrainConfig, zero_stage: int | None = None):
    """deepspeed.initialize with the DeepSpeed config our engine generates for one fp32 rank (ZeRO stage 0,
    clipping), or with `zero_stage` forced."""
    import deepspeed

    from usfmae.train.ds_config import build_ds_config

    single_rank_group()
    conf = build_ds_config(cfg, 1, "fp32")
    if zero_stage is not None:
        conf["zero_optimization"]["stage"] = zero_stage
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=conf)
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
    """engine: plain, deepspeed (the engine's config), deepspeed_zero2 (ZeRO-2 forced)."""
    model = fresh_model(cfg, ckpt)
    opt_cfg = cfg.optimizer
    optimizer = build_optimizer(model, opt_cfg.lr, opt_cfg.weight_decay, opt_cfg.betas, opt_cfg.eps, opt_cfg.impl)
    if engine.startswith("deepspeed"):
        return model, DeepSpeedStep(deepspeed_engine(model, optimizer, cfg, 2 if engine.endswith("zero2") else None))
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

VARIANTS = (("plain", False), ("plain", True), ("deepspeed", False), ("deepspeed_zero2", False), ("deepspeed", True))


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
    opt_cfg = cfg.optimizer
    step_fn = PlainStep(model, build_optimizer(model, plan.peak_lr, opt_cfg.weight_decay, opt_cfg.betas, opt_cfg.eps,
                                               opt_cfg.impl),
                        cfg.deepspeed.gradient_clipping)
    stream_plan = StreamPlan(plan.sources, plan.counts, cfg.seed, cfg.data.shuffle_buffer)
    transform = pretrain_transform(model.patch_embed.img_size[0], cfg.data.augment)
    masking, step, epoch = get_masking(cfg.masking.strategy), 0, 0
    while True:
        segment = Segment.start(epoch, ((0, plan.epoch_samples),), 1, 1, plan.micro_batch, plan.grad_accum)
        for imgs, _ in PretrainStream(stream_plan, segment, transform):
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
        plain_losses, state = [], {"step": 0, "cpu": time.thread_time(), "wall": time.perf_counter()}
        engine_step = trainer.engine.step

        def record(name: str) -> None:
            # this thread's CPU time: each side's reader thread runs across both sides' intervals (whole_runs
            # below counts every thread, over whole runs)
            cpu, wall = time.thread_time(), time.perf_counter()
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
    trainer_losses = [r["loss"] for r in records if "loss" in r]  # each the mean since the previous record
    plain_means = [statistics.mean(plain_losses[i:i + RECORD_EVERY]) for i in range(0, len(plain_losses), RECORD_EVERY)]
    return {"trainer": {**throughput(spec["batch"], *times["trainer"]), "losses": trainer_losses},
            "plain": {**throughput(spec["batch"], *times["plain"]), "losses": plain_means}}


def run_e2e_whole(spec: dict) -> dict:
    """The Trainer and the plain loop one after the other in this process (order alternating with the round),
    each for the same steps: CPU seconds of every thread of the process from the start to the last step."""
    from usfmae.train.engine import Trainer

    single_rank_group()
    out = {}
    for name in ("trainer", "plain") if spec["round"] % 2 == 0 else ("plain", "trainer"):
        with tempfile.TemporaryDirectory() as run_dir:
            cfg = run_config(TINY, spec["batch"], spec["steps"], run_dir, spec["shards"])
            if name == "plain":
                loop = plain_e2e_steps(cfg)
                c0 = cpu_seconds()
                for _ in range(spec["steps"]):
                    next(loop)
                cpu = cpu_seconds() - c0
            else:
                trainer = Trainer(cfg, 0, 1)
                trainer.build()
                engine_step, last = trainer.engine.step, {}

                def timed_step(*args, **kwargs):
                    result = engine_step(*args, **kwargs)
                    last["cpu"] = cpu_seconds()  # the final save and export are not steps
                    return result

                trainer.engine.step = timed_step
                c0 = cpu_seconds()
                trainer.train()
                cpu = last["cpu"] - c0
        out[name] = {"images_per_cpu_s": spec["batch"] * spec["steps"] / cpu, "cpu_s": cpu}
    return out


# ---------------------------------------------------------------- worker: side work left out of images/s


def run_side_work(spec: dict) -> dict:
    """Two Trainers in turn in this process, with and without checkpoints (every 4 steps) and reconstruction
    grids (every 2): the images/s each logs, and for the first also images / (training + side-work seconds)."""
    from usfmae.train.engine import Trainer

    single_rank_group()
    side = ("checkpoint.every_steps=4", "logging.image_grid_every=2", "logging.every_steps=4")
    runs = {"with_side_work": side, "without": ("logging.every_steps=4",)}
    out = {}
    for name in (list(runs) if spec["round"] % 2 == 0 else list(runs)[::-1]):
        with tempfile.TemporaryDirectory() as run_dir:
            cfg = run_config(TINY, spec["batch"], spec["steps"], run_dir, spec["shards"], False, *runs[name])
            trainer = Trainer(cfg, 0, 1)
            trainer.build()
            trainer.train()
            records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
        kept = [r for r in records if "images_per_s" in r][1:]  # the first record holds start-up
        images = sum(r["images_per_s"] * r["time/train_s"] for r in kept)
        side_s = {k: sum(r[f"time/{k}_s"] for r in kept) for k in ("checkpoint", "image_grid", "knn")}
        out[name] = {"logged_images_per_s": images / sum(r["time/train_s"] for r in kept),
                     "images_per_s_counting_side_work": images / (sum(r["time/train_s"] for r in kept)
                                                                  + sum(side_s.values())),
                     "side_work_s": side_s, "records": len(kept)}
    return out


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
    run = {"step": run_step_interleaved, "e2e": run_e2e_interleaved, "e2e_whole": run_e2e_whole,
           "side": run_side_work, "memory": run_memory}[spec["kind"]]
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


def run_launcher(shards: Path, batch: int, steps: int, skip_records: int, ranks: int = 1, sets: tuple = (),
                 env: dict | None = None) -> dict:
    """The real launcher on `ranks` CPU ranks; mean images/s of the metrics.jsonl records after the first few."""
    with tempfile.TemporaryDirectory() as out:
        port = free_port()
        args = ["--max-steps", str(steps), "--set", f"deepspeed.micro_batch_size={batch}", *[
            x for kv in ("logging.every_steps=5", "logging.tensorboard=false", "logging.image_grid_every=0",
                         "checkpoint.every_steps=1000000", *sets) for x in ("--set", kv)]]
        cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(ranks), "--master_port", str(port),
               str(REPO / "launch" / "pretrain.py"), "--cpu", "--config", str(TINY_CONFIG), "--shards", str(shards),
               "--output", out, *args]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=3600,
                              env={k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None})
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        records = [json.loads(ln) for ln in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    kept = [r for r in records if "images_per_s" in r][skip_records:]
    start = next(r for r in records if r.get("event") == "start")
    env_text = " ".join(f"{k}={v}" for k, v in (env or {}).items() if v is not None)
    result = {"command": f"{env_text} deepspeed --num_gpus {ranks} launch/pretrain.py --config "
                         f"configs/pretrain_tiny.yaml --cpu {' '.join(args)}".strip(),
              "data_loader_workers": 1, "records_used": len(kept), "torch_threads_per_rank": start["torch_threads"],
              "images_per_wall_s": statistics.mean(r["images_per_s"] for r in kept),
              "wall_s_including_start_up": time.perf_counter() - t0, "world_size": start["world_size"]}
    print(f"[train] launcher {ranks} rank(s) {sets}: {result['images_per_wall_s']:.1f} img/s", file=sys.stderr,
          flush=True)
    return result


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3),
            "each_round": [round(v, 3) for v in values]}


def compare_rounds(rounds: list[dict], name: str, base: str, key: str = "images_per_cpu_s") -> dict:
    """`name` against `base` over the rounds: ratio per round, median, min, max."""
    return spread([r[name][key] / r[base][key] for r in rounds])


def thread_runs(shards: Path, batch: int, rounds: int) -> dict:
    """2 CPU ranks: the default threads per rank (cores / local ranks) against all cores per rank, alternating."""
    cores = len(os.sched_getaffinity(0))
    variants = {"default_threads": ((), {"OMP_NUM_THREADS": None}),
                "all_cores_per_rank": ((f"deepspeed.cpu_threads={cores}",), {"OMP_NUM_THREADS": None})}
    runs = {name: [] for name in variants}
    for r in range(rounds):
        for name in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
            sets, env = variants[name]
            runs[name].append(run_launcher(shards, batch, 30, 2, ranks=2, sets=sets, env=env))
    return {**{name: {"torch_threads_per_rank": rs[0]["torch_threads_per_rank"], "command": rs[0]["command"],
                      "images_per_wall_s": spread([x["images_per_wall_s"] for x in rs])} for name, rs in runs.items()},
            "default_vs_all_cores": spread([a["images_per_wall_s"] / b["images_per_wall_s"] for a, b in
                                            zip(runs["default_threads"], runs["all_cores_per_rank"])])}


def rounded(x):
    if isinstance(x, float):
        return round(x, 4 if abs(x) < 1 else 1)
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items() if k != "losses"}
    return x


def max_loss_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


SECTIONS = ("step", "e2e", "side", "threads", "memory", "launcher")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64, help="tiny-preset batch (default 64, the paper's)")
    ap.add_argument("--steps", type=int, default=12, help="measured steps per variant (default 12)")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up steps per variant (default 3)")
    ap.add_argument("--rounds", type=int, default=3, help="fresh processes per comparison (default 3)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--base-batch", type=int, default=4, help="ViT-B/16 memory-run batch (0 = skip; default 4)")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    common = {"threads": args.threads, "warmup": args.warmup, "steps": args.steps, "batch": args.batch}
    report = {"benchmark": "training engine: DeepSpeed vs plain PyTorch, CPU", "machine": machine_info(),
              "settings": {**common, "rounds": args.rounds, "preset": TINY, "optimizer": "torch AdamW fused",
                           "config": "configs/pretrain_tiny.yaml (one fp32 rank: ZeRO stage 0; clip 1.0)"}}

    if "step" in args.only:
        rounds = [run_worker({"kind": "step", **common}) for _ in range(args.rounds)]
        report["step"] = {name: spread([r[name]["images_per_cpu_s"] for r in rounds]) for name in rounds[0]}
        report["step"]["vs_plain"] = {name: compare_rounds(rounds, name, "plain") for name in rounds[0] if name != "plain"}
        report["step"]["ckpt_cost"] = {e: compare_rounds(rounds, f"{e}_ckpt", e) for e in ("plain", "deepspeed")}
        report["step"]["loss_max_abs_diff"] = {
            name: max(max_loss_diff(r["plain"]["losses"], r[name]["losses"]) for r in rounds)
            for name in rounds[0] if name != "plain"}

    if "memory" in args.only:
        memory_runs = [(TINY, args.batch)] + ([(BASE, args.base_batch)] if args.base_batch else [])
        report["memory"] = {}
        for preset, batch in memory_runs:
            runs = {variant_name(e, c): run_worker({"kind": "memory", "engine": e, "ckpt": c, "preset": preset,
                                                    "batch": batch, "steps": 1, "threads": args.threads})
                    for e, c in VARIANTS}
            report["memory"][f"{preset}_batch{batch}"] = rounded(runs)

    with tempfile.TemporaryDirectory() as tmp:
        shards, _ = synthetic_shards(Path(tmp), 512, 128)
        if "e2e" in args.only:
            rounds = [run_worker({"kind": "e2e", "shards": str(shards), **common}) for _ in range(args.rounds)]
            report["e2e"] = {name: spread([r[name]["images_per_cpu_s"] for r in rounds]) for name in ("trainer", "plain")}
            report["e2e"]["trainer_vs_plain"] = compare_rounds(rounds, "trainer", "plain")
            report["e2e"]["loss_max_abs_diff_trainer_vs_plain"] = max(
                max_loss_diff(r["trainer"]["losses"], r["plain"]["losses"]) for r in rounds)
            whole = [run_worker({"kind": "e2e_whole", "shards": str(shards), "round": i, **common, "steps": 40})
                     for i in range(args.rounds)]
            report["e2e"]["whole_runs"] = {
                **{name: spread([r[name]["images_per_cpu_s"] for r in whole]) for name in ("trainer", "plain")},
                "trainer_vs_plain": compare_rounds(whole, "trainer", "plain")}
        if "side" in args.only:
            rounds = [run_worker({"kind": "side", "shards": str(shards), "round": i, **common, "steps": 24})
                      for i in range(args.rounds)]
            report["side"] = {name: {"logged_images_per_s": spread([r[name]["logged_images_per_s"] for r in rounds]),
                                     "images_per_s_counting_side_work": spread(
                                         [r[name]["images_per_s_counting_side_work"] for r in rounds]),
                                     "side_work_s_per_run": rounds[-1][name]["side_work_s"]}
                              for name in rounds[0]}
            report["side"]["logged_with_vs_without"] = compare_rounds(rounds, "with_side_work", "without",
                                                                      "logged_images_per_s")
        if "threads" in args.only:
            report["threads"] = thread_runs(shards, 16, args.rounds)
        if "launcher" in args.only:
            report["launcher"] = rounded(run_launcher(shards, args.batch, steps=30, skip_records=2,
                                                      env={"OMP_NUM_THREADS": "1"}))
    report["load_average_at_end"] = list(os.getloadavg())
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
