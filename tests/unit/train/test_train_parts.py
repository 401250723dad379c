"""Optimizer groups, DeepSpeed config generation, batch arithmetic, device and precision decisions."""

import pytest
import torch

from usfmae.config import ConfigError, PretrainConfig, load_config
from usfmae.model import create_model
from usfmae.train import device as dev
from usfmae.train.ds_config import build_ds_config
from usfmae.optim import param_groups
from usfmae.train.optim import build_optimizer
from usfmae.train.plan import make_plan

from shardutil import make_shards


def test_no_weight_decay_on_biases_norms_tokens_and_position_embeddings():
    model = create_model("mae_vit_tiny_patch8")
    no_decay, decay = param_groups(model, 0.01)  # timm's order: the group without decay first
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert {"cls_token", "mask_token", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias",
            "decoder_norm.weight", "patch_embed.proj.bias"} <= no_decay_names
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.01
    decay_names = {names[id(p)] for p in decay["params"]}
    assert "blocks.0.attn.qkv.weight" in decay_names and "patch_embed.proj.weight" in decay_names
    # fixed sin-cos embeddings are not trained at all
    assert "pos_embed" not in decay_names | no_decay_names


def test_fused_adamw_steps_on_cpu():
    model = create_model("mae_vit_tiny_patch8")
    opt = build_optimizer(model, 1e-3, 0.01, (0.9, 0.95), 1e-8, "torch_fused")
    assert opt.defaults["fused"] is True
    before = model.blocks[0].mlp.fc1.weight.detach().clone()
    model(torch.randn(2, 3, 64, 64))[0].backward()
    opt.step()
    assert not torch.equal(before, model.blocks[0].mlp.fc1.weight)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_deepspeed_fused_adam_is_refused_clearly_without_cuda():
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        build_optimizer(create_model("mae_vit_tiny_patch8"), 1e-3, 0.01, (0.9, 0.95), 1e-8, "deepspeed_fused")


def test_deepspeed_config_from_ours():
    cfg = load_config(PretrainConfig, "configs/pretrain_vitb16.yaml",
                      ["deepspeed.global_batch_size=null", "deepspeed.micro_batch_size=64", "deepspeed.grad_accum_steps=2",
                       "deepspeed.overrides={zero_optimization: {reduce_bucket_size: 20000000}}"])
    ds = build_ds_config(cfg, world_size=8, precision="bf16")
    assert ds["train_batch_size"] == 64 * 2 * 8 and ds["gradient_accumulation_steps"] == 2
    assert ds["data_types"] == {"grad_accum_dtype": "fp32"}  # bf16 + accumulation: sum gradients in fp32
    assert ds["zero_optimization"]["stage"] == 2 and ds["zero_optimization"]["reduce_bucket_size"] == 20_000_000
    assert ds["zero_optimization"]["overlap_comm"] is True  # overrides merge, not replace
    assert ds["bf16"]["enabled"] and not ds["fp16"]["enabled"] and ds["gradient_clipping"] == 1.0


@pytest.mark.parametrize("config,world", [("configs/pretrain_vitb16.yaml", 8), ("configs/pretrain_vitb16_cluster.yaml", 16)])
def test_zero_communication_settings_are_pinned(config, world):
    """The settings benchmarks/README.md "ZeRO settings" derives for ViT-B/16 on NVLink and InfiniBand."""
    ds = build_ds_config(load_config(PretrainConfig, config), world, "bf16")
    assert ds["zero_optimization"] == {"stage": 2, "overlap_comm": True, "contiguous_gradients": True,
                                       "reduce_scatter": True, "use_multi_rank_bucket_allreduce": True,
                                       "reduce_bucket_size": 10_000_000, "allgather_bucket_size": 500_000_000}
    assert ds["bf16"] == {"enabled": True, "check_grad_overflow": True}  # non-finite steps skipped on every rank
    from deepspeed.runtime.precision_config import get_bfloat16_config
    from deepspeed.runtime.zero.config import get_zero_config

    zero = get_zero_config(ds)  # DeepSpeed 0.19.8 reads every key as meant (unknown keys are refused)
    assert (zero.overlap_comm, zero.reduce_bucket_size, zero.use_multi_rank_bucket_allreduce) == (True, 10**7, True)
    assert get_bfloat16_config(ds).check_grad_overflow is True


def test_one_fp32_rank_runs_zero_stage_0():
    """Nothing to partition on one rank: stage 0 (mixed precision keeps its stage, as stage 0 cannot
    accumulate it in fp32), and the same stage as configured on two ranks."""
    cfg = load_config(PretrainConfig, "configs/pretrain_tiny.yaml")
    stage = {(w, p): build_ds_config(cfg, w, p)["zero_optimization"]["stage"]
             for w in (1, 2) for p in ("fp32", "bf16", "fp16")}
    assert stage == {(1, "fp32"): 0, (1, "bf16"): 2, (1, "fp16"): 2, (2, "fp32"): 2, (2, "bf16"): 2, (2, "fp16"): 2}


def test_plan_arithmetic_and_lr_scaling(tmp_path):
    shards = make_shards(tmp_path / "s", [30, 34])
    cfg = load_config(PretrainConfig, "configs/pretrain_tiny.yaml",
                      [f"data.shards=[{shards}]", "deepspeed.micro_batch_size=4", "deepspeed.grad_accum_steps=2",
                       "schedule.epochs=3", "optimizer.lr=null", "optimizer.base_lr=1e-3"])
    plan = make_plan(cfg, world_size=2)
    assert plan.epoch_samples == 64 and plan.global_batch == 16 and plan.grad_accum == 2
    assert plan.steps_per_epoch == 4 and plan.total_steps == 12
    assert plan.warmup_steps == 1 and plan.peak_lr == pytest.approx(1e-3 * 16 / 256)
    with pytest.raises(ConfigError, match="data.shards is empty"):
        make_plan(load_config(PretrainConfig, "configs/pretrain_tiny.yaml"), 1)


def test_global_batch_size_gives_the_same_recipe_at_every_world_size(tmp_path):
    shards = make_shards(tmp_path / "s", [60, 40])
    cfg = load_config(PretrainConfig, "configs/pretrain_tiny.yaml",
                      [f"data.shards=[{shards}]", "deepspeed.global_batch_size=24", "deepspeed.micro_batch_size=4",
                       "schedule.epochs=3", "optimizer.lr=null"])
    plans = {w: make_plan(cfg, w) for w in (1, 2, 3, 6)}
    assert {w: p.grad_accum for w, p in plans.items()} == {1: 6, 2: 3, 3: 2, 6: 1}
    fixed = {(p.global_batch, p.peak_lr, p.steps_per_epoch, p.total_steps, p.warmup_steps) for p in plans.values()}
    assert fixed == {(24, 1e-3 * 24 / 256, 4, 12, 1)}  # the same arithmetic: exactly equal
    assert all(build_ds_config(cfg, w, "fp32")["train_batch_size"] == 24 for w in plans)
    for world, micro, accum, real in ((4, 3, 2, 24), (5, 2, 2, 20)):  # 4 x 4 and 4 x 5 do not divide 24
        p = make_plan(cfg, world)
        assert (p.micro_batch, p.grad_accum, p.global_batch) == (micro, accum, real)
        assert (p.total_steps, p.warmup_steps) == (12, 1)  # the schedule of the planned 24
        assert p.batch.rule == ("exact" if real == 24 else "nearest")
        assert p.peak_lr == pytest.approx(1e-3 * real / 256)
    with pytest.raises(ConfigError, match="grad_accum_steps=2 contradicts deepspeed.global_batch_size=24"):
        make_plan(load_config(PretrainConfig, "configs/pretrain_tiny.yaml",
                              [f"data.shards=[{shards}]", "deepspeed.global_batch_size=24",
                               "deepspeed.micro_batch_size=4", "deepspeed.grad_accum_steps=2"]), 1)
    # the paper's config: batch 64 whatever the GPU count, micro-batch = 64 / GPUs
    paper = load_config(PretrainConfig, "configs/pretrain_vitb16.yaml", [f"data.shards=[{shards}]",
                                                                         "data.epoch_samples=374192"])
    for gpus, micro in ((1, 64), (8, 8), (64, 1)):
        p = make_plan(paper, gpus)
        assert (p.micro_batch, p.grad_accum, p.global_batch, p.peak_lr) == (micro, 1, 64, 1e-3)
        assert (p.steps_per_epoch, p.total_steps, p.warmup_steps) == (5846, 584600, 58460)
    cluster = load_config(PretrainConfig, "configs/pretrain_vitb16_cluster.yaml",
                          [f"data.shards=[{shards}]", "data.epoch_samples=374192"])
    p = make_plan(cluster, 16)
    assert (p.micro_batch, p.grad_accum, p.global_batch, p.steps_per_epoch) == (64, 4, 4096, 91)
    assert p.peak_lr == pytest.approx(1.5e-4 * 4096 / 256)


def test_compiled_model_gets_the_same_parameter_groups():
    model = create_model("mae_vit_tiny_patch8")
    compiled = torch.compile(model, backend="aot_eager")  # wraps names in `_orig_mod.`; nothing compiles yet
    assert next(iter(dict(compiled.named_parameters()))).startswith("_orig_mod.")
    plain, wrapped = param_groups(model, 0.01), param_groups(compiled, 0.01)
    assert len(plain) == len(wrapped) == 2
    for a, b in zip(plain, wrapped):
        assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]] and a["weight_decay"] == b["weight_decay"]
    assert any(p is model.cls_token for p in wrapped[0]["params"])  # no decay on tokens under compile either


# ---------------------------------------------------------------- device and precision, CUDA queries patched
ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # the pinned CUDA 13.0 wheel's


def fake_cuda(monkeypatch, capability=(8, 0), count=8, available=True, archs=ARCHS, driver=13000):
    current = []
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: archs)
    monkeypatch.setattr(torch._C, "_cuda_getDriverVersion", lambda: driver, raising=False)  # CPU wheels lack it
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count if available else 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: current.append(d))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability)

    def touched(*a, **k):
        raise AssertionError("is_bf16_supported counts emulation and initialises cuda:0: not to be used")

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", touched)
    return current


@pytest.mark.parametrize("capability,expected", [((9, 0), "bf16"), ((8, 0), "bf16"), ((12, 0), "bf16"), ((7, 5), "fp16")])
def test_auto_precision_is_bf16_only_where_native(monkeypatch, capability, expected):
    current = fake_cuda(monkeypatch, capability)
    d = dev.select_device("cuda", local_rank=5)
    assert current == [5] and d.torch_device == torch.device("cuda", 5) and d.backend == "nccl"  # its own GPU only
    assert dev.resolve_precision("auto", d) == expected
    if expected == "fp16":  # explicit bf16 on a GPU without it is refused, not emulated
        with pytest.raises(ConfigError, match="no native bf16"):
            dev.resolve_precision("bf16", d)


def cpu_accelerator(monkeypatch, fp16, bf16=True):
    """DeepSpeed's accelerator reporting the given CPU capabilities (what deepspeed.initialize checks)."""
    from deepspeed.accelerator import get_accelerator

    monkeypatch.setattr(get_accelerator(), "is_fp16_supported", lambda: fp16)
    monkeypatch.setattr(get_accelerator(), "is_bf16_supported", lambda: bf16)


@pytest.mark.parametrize("fp16,bf16,instead", [(None, True, "bf16"), (False, False, "fp32")])
def test_cpu_precision_the_accelerator_lacks_is_refused_naming_what_to_use(monkeypatch, fp16, bf16, instead):
    cpu_accelerator(monkeypatch, fp16, bf16)  # None: what DeepSpeed 0.19.8's CPU accelerator returns without it
    cpu = dev.select_device("cpu", 0)
    with pytest.raises(ConfigError, match=rf"precision=fp16 .*is_fp16_supported\(\) is false.*use --set "
                                          rf"deepspeed.precision={instead}$"):
        dev.resolve_precision("fp16", cpu)
    assert dev.resolve_precision("auto", cpu) == "fp32" and dev.resolve_precision("fp32", cpu) == "fp32"
    cpu_accelerator(monkeypatch, fp16=True)
    assert dev.resolve_precision("fp16", cpu) == "fp16" and dev.cpu_supports("fp16")


def test_pretrain_refuses_fp16_without_it_before_deepspeed_starts(tmp_path, monkeypatch, capsys):
    """The train() path and --dry-run stop with exit 2 and the advice, before any process group or engine."""
    import deepspeed

    from usfmae.commands import pretrain

    cpu_accelerator(monkeypatch, fp16=None)
    monkeypatch.setattr(deepspeed, "init_distributed", lambda *a, **k: pytest.fail("process group started"))
    monkeypatch.setattr(deepspeed, "initialize", lambda *a, **k: pytest.fail("engine built"))
    shards = make_shards(tmp_path / "shards", [24])
    args = ["--cpu", "--config", "configs/pretrain_tiny.yaml", "--shards", str(shards), "--output",
            str(tmp_path / "run"), "--set", "deepspeed.precision=fp16", "--set", "deepspeed.micro_batch_size=4"]
    for extra in ([], ["--dry-run"]):
        assert pretrain.main(args + extra) == 2
        err = capsys.readouterr().err
        assert "error: deepspeed.precision=fp16 on CPU ranks" in err and "deepspeed.precision=bf16" in err, extra
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("capability", [(7, 0), (6, 0), (3, 7)])
def test_gpus_without_kernels_in_the_wheel_are_refused(monkeypatch, capability):
    """V100 (7.0) and older: the CUDA 13.0 wheel has no kernels for them; refused before CUDA is touched."""
    current = fake_cuda(monkeypatch, capability)
    with pytest.raises(dev.DeviceError) as err:
        dev.select_device("cuda", local_rank=1)
    msg = str(err.value)
    assert f"compute capability {capability[0]}.{capability[1]}) is not supported" in msg and current == []
    assert "supported are GPUs of compute capability >= 7.5" in msg and "sm_75 sm_80" in msg


def test_kernel_compatibility_within_a_major_version_and_through_ptx():
    problem = dev.supported_gpu_problem
    assert problem((8, 9), ["sm_80", "sm_90"], 13000, "13.0") is None  # L40S: sm_80 cubins run on 8.9
    assert problem((9, 0), ["sm_80", "sm_86"], 13000, "13.0") is not None  # no sm_9x cubin, no PTX
    assert problem((9, 0), ["sm_80", "compute_80"], 13000, "13.0") is None  # PTX JIT-compiles forward
    assert problem((8, 0), ["sm_86"], 13000, "13.0") is not None  # a newer minor's cubin does not run on 8.0


def test_a_driver_older_than_torchs_cuda_is_refused(monkeypatch):
    fake_cuda(monkeypatch, (9, 0), driver=12080)
    with pytest.raises(dev.DeviceError, match=r"driver supports CUDA up to 12.8, but torch .* CUDA 13.0: update the "
                                              r"driver \(CUDA 13.0 wheels need NVIDIA driver >= 580\)"):
        dev.select_device("cuda", 0)


@pytest.mark.parametrize("capability,driver,status", [((9, 0), 13000, "OK"), ((7, 0), 13000, "FAIL"),
                                                      ((9, 0), 12040, "FAIL")])
def test_doctor_checks_gpus_and_driver_as_start_up_does(monkeypatch, capability, driver, status):
    from usfmae import doctor

    fake_cuda(monkeypatch, capability, count=2, driver=driver)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "NVIDIA H100 80GB HBM3")
    check = doctor.check_cuda()
    assert check.status == status
    if status == "OK":
        assert "2 GPU(s): NVIDIA H100 80GB HBM3 (9.0); bf16; driver supports CUDA 13.0" == check.detail
    else:
        assert "GPU 0: " in check.detail and ("not supported" in check.detail or "update the driver" in check.detail)


def test_fp16_config_uses_dynamic_loss_scaling_and_parameter_dtype_inputs():
    cfg = load_config(PretrainConfig, "configs/pretrain_tiny.yaml")
    ds = build_ds_config(cfg, 2, "fp16")
    assert ds["fp16"]["enabled"] and ds["fp16"]["loss_scale"] == 0 and not ds["bf16"]["enabled"]
    assert "data_types" not in ds and dev.param_dtype("fp16") == torch.float16
    bf16 = build_ds_config(cfg, 2, "bf16")
    assert "data_types" not in bf16  # no accumulation: nothing to accumulate in fp32


def test_stage_0_refused_with_mixed_precision():
    with pytest.raises(ConfigError, match="zero_stage=0 with precision=bf16.*use zero_stage 1"):
        load_config(PretrainConfig, "configs/pretrain_tiny.yaml", ["deepspeed.zero_stage=0", "deepspeed.precision=bf16"])
    load_config(PretrainConfig, "configs/pretrain_tiny.yaml", ["deepspeed.zero_stage=0", "deepspeed.precision=fp32"])


def test_no_silent_cpu_fallback(monkeypatch):
    fake_cuda(monkeypatch, available=False)
    with pytest.raises(dev.DeviceError) as err:
        dev.select_device("cuda", 0)
    msg = str(err.value)
    assert "CUDA is unusable" in msg and f"torch {torch.__version__} built for CUDA" in msg
    assert "is_available() = False" in msg and "--cpu" in msg
    assert dev.select_device("cpu", 3).backend == "gloo"  # CPU ranks when asked for
    fake_cuda(monkeypatch, count=2)
    with pytest.raises(dev.DeviceError, match="local rank 2 but this node shows 2 GPU"):
        dev.select_device("cuda", 2)


def test_timeout_bounds_the_s3_retry_budget():
    """The default per-window budget is half of what the process-group timeout leaves after one request's
    time-outs (connect + read); a budget that does not fit is refused, naming both keys."""
    cfg = load_config(PretrainConfig, "configs/pretrain_vitb16.yaml", ["data.shards=[s3://b/p]"])
    assert cfg.s3_retry_budget_s() == (30 * 60 - 2 * 60) / 2
    with pytest.raises(ConfigError, match="data.s3_retry_budget_s=1000 s .* deepspeed.timeout_minutes=10"):
        load_config(PretrainConfig, "configs/pretrain_vitb16.yaml",
                    ["data.shards=[s3://b/p]", "deepspeed.timeout_minutes=10", "data.s3_retry_budget_s=1000"])


def test_release_shm_allreduce_unlinks_only_this_ranks_buffer(tmp_path):
    import os

    from usfmae.train.device import release_shm_allreduce

    env = {"RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29555"}
    mine = tmp_path / f"deepspeed_allreduce_buffer_{os.getuid()}_127.0.0.1_29555_1"
    peer = tmp_path / f"deepspeed_allreduce_buffer_{os.getuid()}_127.0.0.1_29555_0"
    other_run = tmp_path / f"deepspeed_allreduce_buffer_{os.getuid()}_127.0.0.1_29556_1"
    for path in (mine, peer, other_run):
        path.write_bytes(b"x")
    assert release_shm_allreduce(env, tmp_path) == mine
    assert not mine.exists() and peer.exists() and other_run.exists()
    assert release_shm_allreduce(env, tmp_path) is None  # already gone (or never made: GPUs, several nodes)
    assert release_shm_allreduce({}, tmp_path) is None  # not launched as a rank


@pytest.mark.parametrize("stage", [1, 2])
def test_mixed_precision_with_accumulation_sums_gradients_in_fp32(stage):
    cfg = load_config(PretrainConfig, "configs/pretrain_tiny.yaml",
                      ["deepspeed.micro_batch_size=4", "deepspeed.grad_accum_steps=2", f"deepspeed.zero_stage={stage}"])
    from deepspeed.runtime.constants import DATA_TYPES, GRAD_ACCUM_DTYPE

    for precision in ("bf16", "fp16"):
        ds = build_ds_config(cfg, 2, precision)
        assert ds[DATA_TYPES] == {GRAD_ACCUM_DTYPE: "fp32"}  # the keys DeepSpeed 0.19.8 reads (runtime/config.py)
    assert "data_types" not in build_ds_config(cfg, 2, "fp32")


def test_ranks_that_resolved_another_precision_or_config_are_named():
    from usfmae.train.agreement import check_agreement, config_digest

    a, b = config_digest({"bf16": {"enabled": True}}), config_digest({"fp16": {"enabled": True}})
    same = [{"host": "n0", "precision": "bf16", "ds_config": a, "workers": 3}] * 4
    check_agreement(same)
    mixed = same[:2] + [{"host": "n1", "precision": "fp16", "ds_config": b, "workers": 3}] * 2
    with pytest.raises(ConfigError, match=rf"bf16, DeepSpeed config {a}: rank\(s\) 0-1 on n0\n  fp16, DeepSpeed "
                                          rf"config {b}: rank\(s\) 2-3 on n1\n.*deepspeed.precision=fp16"):
        check_agreement(mixed)


def test_loader_workers_derive_from_cores_per_gpu_rank(monkeypatch):
    monkeypatch.setattr(dev.os, "sched_getaffinity", lambda pid: set(range(96)))
    assert dev.loader_workers(None, "cuda", {"LOCAL_SIZE": "8"}) == (11, "96 cores / 8 rank(s) on this node, minus 1 for the rank")
    assert dev.loader_workers(None, "cuda", {"LOCAL_WORLD_SIZE": "96"})[0] == 1
    assert dev.loader_workers(None, "cpu", {})[0] == 1 and dev.loader_workers(4, "cuda", {}) == (4, "data.num_workers")
