"""Any world size resumes: the batch rule (exact or nearest realisable, lr scaled), the schedule kept, the data
position carried across a change of micro-batch, and a run without a fixed global batch keeping its own."""

import json

import pytest

from usfmae.commands.pretrain import dry_run
from usfmae.config import PretrainConfig, load_config
from usfmae.data.epoch import Segment, merge, total
from usfmae.runstore import CHECKPOINTS, RUN_FILES, RunStore
from usfmae.train.checkpointing import RunCheckpoints, keep_saved_batch
from usfmae.train.plan import make_plan

from shardutil import make_shards

VITB = {"configs/pretrain_vitb16.yaml": (64, 1e-3), "configs/pretrain_vitb16_cluster.yaml": (4096, 1.5e-4 * 4096 / 256)}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("s"), [40, 24])


@pytest.mark.parametrize("config", VITB)
def test_dry_run_succeeds_at_every_world_size_from_1_to_64(config, shards):
    planned, lr = VITB[config]
    cfg = load_config(PretrainConfig, config, [f"data.shards=[{shards}]", "data.epoch_samples=374192"])
    schedules, rules = set(), {}
    for world in range(1, 65):
        plan = dry_run(cfg, world)
        ds, real = plan["deepspeed_config"], plan["global_batch_size"]
        assert ds["train_batch_size"] == real == plan["micro_batch_size"] * plan["grad_accum_steps"] * world
        assert ds["train_micro_batch_size_per_gpu"] == plan["micro_batch_size"] >= 1
        assert plan["planned_global_batch_size"] == planned
        assert plan["peak_lr"] == pytest.approx(lr * real / planned)  # MAE's linear rule
        rules[world] = plan["batch_rule"]
        assert (real == planned) == (plan["batch_rule"] == "exact")
        if plan["batch_rule"] == "nearest":
            assert f"nearest realisable global batch {real}" in plan["batch_note"]
        schedules.add((plan["total_steps"], plan["warmup_steps"]))
    assert len(schedules) == 1  # the planned batch's schedule at every world size
    assert all(rules[w] == "exact" for w in (1, 2, 4, 8, 16, 32, 64))
    assert rules[24] == rules[48] == "nearest"


def test_nearest_rule_for_a_32_gpu_cluster_run_on_24_or_48(shards):
    cfg = load_config(PretrainConfig, "configs/pretrain_vitb16_cluster.yaml",
                      [f"data.shards=[{shards}]", "data.epoch_samples=374192"])
    split = {w: (p.micro_batch, p.grad_accum, p.global_batch) for w in (24, 32, 48) for p in [make_plan(cfg, w)]}
    assert split == {24: (57, 3, 4104), 32: (64, 2, 4096), 48: (43, 2, 4128)}  # micro-batch <= 64, within 1%
    paper = load_config(PretrainConfig, "configs/pretrain_vitb16.yaml", [f"data.shards=[{shards}]", "data.epoch_samples=640"])
    p = make_plan(paper, 24)
    assert (p.micro_batch, p.grad_accum, p.global_batch, p.peak_lr) == (3, 1, 72, pytest.approx(1e-3 * 72 / 64))


def _positions(seg: Segment, upto: int | None = None) -> list[int]:
    out = []
    for r in range(seg.world):
        for w in range(seg.workers):
            rng = seg.stream_range(r, w)
            n = total(rng) if upto is None else seg.stream_batches(w, upto) * seg.micro_batch
            left = n
            for a, b in rng:
                take = min(b - a, left)
                out += range(a, a + take)
                left -= take
    return out


def test_a_new_micro_batch_takes_exactly_the_positions_left():
    """32 ranks x 2 images, 5 micro-batches done, then 24 ranks x 3 (the nearest rule): no position twice."""
    epoch = 1000
    first = Segment.start(0, ((0, epoch),), 32, 2, 2, 1)
    seen = _positions(first, 5)
    second = Segment.start(0, first.remaining_after(5), 24, 2, 3, 1)
    rest = _positions(second)
    assert len(set(seen)) == len(seen) and len(set(rest)) == len(rest) and not set(seen) & set(rest)
    tail = second.remaining_after(second.micro_batches)
    assert total(tail) < 24 * 3  # less than one global batch is left for the next epoch
    assert merge([(p, p + 1) for p in seen + rest] + list(tail)) == ((0, epoch),)  # every position accounted for


def _saved_run(tmp_path, cfg, world):
    plan = make_plan(cfg, world)
    tag = tmp_path / "run" / CHECKPOINTS / "step00000010"
    tag.mkdir(parents=True)
    (tag / "state.json").write_text(json.dumps({"plan": plan.summary(), "data": {"fingerprint": plan.data_fingerprint}}))
    for name in RUN_FILES:  # a complete checkpoint to the store's eyes; only state.json is read here
        (tag / name).touch(exist_ok=True)
    (tag.parent / "latest").write_text(tag.name)
    return plan, tag


def test_a_resume_at_another_realisable_batch_keeps_the_schedule(tmp_path, shards, capsys):
    cfg = load_config(PretrainConfig, "configs/pretrain_vitb16_cluster.yaml",
                      [f"data.shards=[{shards}]", "data.epoch_samples=374192", f"output_dir={tmp_path / 'run'}"])
    saved, tag = _saved_run(tmp_path, cfg, 32)
    here = make_plan(cfg, 24)
    RunCheckpoints(cfg, here, RunStore(tmp_path / "run"), None, None, {}, True).check_resumable(
        json.loads((tag / "state.json").read_text()), str(tag))
    out = capsys.readouterr().out
    assert "global batch 4104 on 24 rank(s), 4096 when step00000010 was saved" in out and "total_steps" not in out
    assert (here.total_steps, here.warmup_steps) == (saved.total_steps, saved.warmup_steps)


def test_a_run_without_a_fixed_global_batch_keeps_its_saved_one(tmp_path, shards):
    cfg = load_config(PretrainConfig, "configs/pretrain_vitb16_throughput.yaml",
                      [f"data.shards=[{shards}]", "data.epoch_samples=374192", f"output_dir={tmp_path / 'run'}"])
    assert keep_saved_batch(cfg) is cfg  # a fresh run: 64 per GPU, whatever the GPUs add up to
    assert make_plan(cfg, 24).global_batch == 64 * 24
    saved, _ = _saved_run(tmp_path, cfg, 32)
    resumed = keep_saved_batch(cfg)
    assert resumed.deepspeed.global_batch_size == 2048 and resumed.deepspeed.micro_batch_size == 64
    plan = make_plan(resumed, 24)
    assert (plan.global_batch, plan.batch.rule, plan.total_steps) == (2064, "nearest", saved.total_steps)
    assert plan.peak_lr == pytest.approx(1.5e-4 * 2064 / 256)


def test_samples_seen_counts_on_over_a_resume_at_another_global_batch(tmp_path, process_group):
    """2 steps of 8 images, then a resume at a global batch of 12: 16 + 12 after step 3, in metrics and state."""
    from usfmae.checkpoint import read_run_checkpoint
    from usfmae.train.engine import Trainer

    from helpers import REPO

    data = make_shards(tmp_path / "shards", [24, 24])

    def run(*sets):
        cfg = load_config(PretrainConfig, REPO / "configs/pretrain_tiny.yaml",
                          [f"data.shards=[{data}]", f"output_dir={tmp_path / 'run'}", "deepspeed.device=cpu",
                           "deepspeed.micro_batch_size=4", "deepspeed.cpu_threads=1", "logging.tensorboard=false",
                           "logging.image_grid_every=0", "logging.every_steps=1", "checkpoint.every_steps=1",
                           "schedule.max_steps=4", *sets])
        trainer = Trainer(cfg, 0, 1)
        trainer.build()
        trainer.train()

    run("deepspeed.global_batch_size=8", "schedule.stop_at_step=2")
    run("deepspeed.global_batch_size=12", "schedule.stop_at_step=3")
    seen = {r["step"]: r["samples_seen"] for r in map(json.loads, (tmp_path / "run/metrics.jsonl").open())
            if "samples_seen" in r}
    assert seen == {1: 8, 2: 16, 3: 28}
    state, _, _ = read_run_checkpoint(tmp_path / "run" / CHECKPOINTS / "step00000003")
    assert state["samples_seen"] == 28
