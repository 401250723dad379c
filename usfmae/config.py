"""Configuration: pydantic models validated on load, YAML files, dotted command-line overrides.

    cfg = load_config(PretrainConfig, "configs/pretrain_tiny.yaml", ["optimizer.lr=2e-3"])

Unknown keys and bad values raise `ConfigError` naming the dotted key path. A config is a path or the name
of one shipped with the package (`pretrain_tiny`, `pretrain_tiny.yaml`: see `config_path`).
"""

import json
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError, field_validator, model_validator



class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message names the key."""


class Section(BaseModel):
    """The base of every config model in usfmae (pretraining, fine-tuning, shard building, cleaning, readers):
    unknown keys are rejected and assignments validated, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------------------- pretraining
class DataConfig(Section):
    shards: list[str] = Field(default_factory=list, description=(
        "Shard sources: local globs/brace patterns ('shards/demo-{000000..000003}.tar', 'shards/*.tar'), "
        "directories holding a manifest.json, or s3://bucket/prefix URLs. Several sources are mixed by `weights`."))
    weights: list[float] | None = Field(None, description=(
        "Share of each epoch per entry of `shards` (e.g. [0.7, 0.3] for 70% new institutional data, 30% replay): "
        "exact counts of epoch_samples, mixed throughout the epoch; a source drawn more than it holds is cycled "
        "(reshuffled). None = proportional to their sizes."))
    shuffle_buffer: int = Field(1000, ge=0, description=(
        "Sample shuffle across shards: each source's shards (in a per-epoch seeded order) are grouped into windows "
        "of consecutive shards holding at least this many samples (manifest counts), and each window's samples "
        "are yielded in a seeded permutation. 0, or shards of at least this size, = shuffle within each shard. "
        "Windows are cut from the manifest, so resume stays exact: windows before the position are skipped "
        "unopened. Memory: about two windows of encoded images per loader worker and source (the one being "
        "consumed, and the next, read in the background: of this epoch or the next)."))
    num_workers: int | None = Field(None, ge=0, description=(
        "DataLoader worker processes per rank; each is one stream of the epoch's positions (0 = one, in-process). "
        "None = derived per node: on GPU ranks the cores this process may use / GPU ranks on the node, minus one "
        "for the rank itself (a 96-core 8-GPU node: 11); on CPU ranks 1 (their cores run the torch threads); "
        "every rank then uses the fewest any rank derived (train.agreement). Changing it on resume re-cuts the "
        "remaining positions: nothing is repeated or lost."))
    epoch_samples: int | None = Field(None, gt=0, description=(
        "Samples per epoch, drawn from the sources in proportion to `weights` (exact counts). None = the total in "
        "the shard manifests (the build's manifest.json): every sample once per epoch."))
    augment: Literal["fused", "torchvision", "none"] = Field("fused", description=(
        "The paper's augmentations (rotation 0-90, flips, RandomResizedCrop scale (0.5, 2.0)). fused: "
        "torchvision's parameter draws applied as one OpenCV affine warp (fast); torchvision: its v2 transforms; "
        "none: resize only. A boolean reads as true = fused, false = none (augment on or off)."))
    s3_endpoint_url: str | None = Field(None, description=(
        "Custom S3 endpoint (MinIO, Ceph, moto). None = AWS with the standard boto3 credential chain."))
    s3_retry_budget_s: float | None = Field(None, gt=0, description=(
        "Seconds a loader may spend retrying the S3 reads of one shuffle window (all its shards together) before "
        "the run stops with an error naming the shard, the endpoint and this budget. None = half of what "
        "deepspeed.timeout_minutes leaves after one request's time-outs (2 x s3_timeout_s): a micro-batch can "
        "wait for two windows of a source. With one request's time-outs it must stay below the process-group "
        "timeout, or a rank stuck retrying would be killed by the timeout instead of stopping with that error."))
    s3_timeout_s: float = Field(60.0, gt=0, description=(
        "Connect and read time-out of one S3 request of the loader: a request that stalls longer is retried "
        "(with backoff, within s3_retry_budget_s)."))
    shard_cache_dir: str | None = Field(None, description=(
        "Node-local folder keeping copies of shards streamed from S3 ($VARS expanded, e.g. '$TMPDIR/usfmae-shards' "
        "or a local NVMe scratch), so later epochs and other windows, workers and ranks of the node read them "
        "from disk instead of downloading them again. Shared safely by every rank and worker of a node; never a "
        "shared filesystem. None = off (the default: /tmp is often small or in RAM on GPU nodes; choose a disk "
        "and a size)."))
    shard_cache_bytes: ByteSize = Field(ByteSize(50 * 2**30), gt=0, description=(
        "Size bound of shard_cache_dir, bytes or with a unit ('200GiB'): least recently used shards are "
        "deleted beyond it. At least the corpus (or the sources streamed from S3) for epochs after the first "
        "to download nothing."))

    @field_validator("augment", mode="before")
    @classmethod
    def _augment_bool(cls, v: Any) -> Any:
        return {True: "fused", False: "none"}.get(v, v) if isinstance(v, bool) else v


class ModelConfig(Section):
    preset: str = Field("mae_vit_base_patch16", description="Preset name from usfmae.model.PRESETS.")
    img_size: int | None = Field(None, description="Override the preset's input size (None = preset's).")
    patch_size: int | None = Field(None, description="Override the preset's patch size.")
    in_chans: int | None = Field(None, description="Override the input channels.")
    embed_dim: int | None = Field(None, description="Override the encoder width.")
    depth: int | None = Field(None, description="Override the number of encoder blocks.")
    num_heads: int | None = Field(None, description="Override the encoder attention heads.")
    decoder_embed_dim: int | None = Field(None, description="Override the decoder width.")
    decoder_depth: int | None = Field(None, description="Override the number of decoder blocks.")
    decoder_num_heads: int | None = Field(None, description=(
        "Decoder heads; the released weights used 16 (the paper says 8). Shapes do not depend on it."))
    norm_pix_loss: bool = Field(False, description="Normalise each target patch by its mean/std before the MSE.")
    drop_path_rate: float = Field(0.0, ge=0.0, lt=1.0, description="Stochastic depth in the encoder.")

    def overrides(self) -> dict[str, Any]:
        """Constructor keyword arguments that differ from the preset."""
        return {k: v for k, v in self.model_dump(exclude={"preset"}).items() if v is not None}


class MaskingConfig(Section):
    strategy: Literal["random", "multiscale"] = Field("random", description=(
        "random: uniform without replacement (the paper); multiscale: square blocks of `scales` patches "
        "(BUS-M2AE, our interpretation)."))
    ratio: float = Field(0.25, ge=0.0, lt=1.0, description="Fraction of patches masked (paper: 0.25).")
    scales: list[int] = Field([1, 2, 4], min_length=1, description="multiscale: block sides in patches.")
    scale_probs: list[float] | None = Field(None, description="multiscale: probability of each scale (None = equal).")
    feature_depths: list[int] = Field(default_factory=list, description=(
        "Feature-level masking (BUS-M2AE): encoder blocks whose input features get multi-scale blocks of "
        "visible tokens zeroed, during pretraining only. Empty = off."))
    feature_rate: float = Field(0.0, ge=0.0, lt=1.0, description="Feature-level masking: fraction of the token grid zeroed.")
    feature_scales: list[int] = Field([1, 2], min_length=1, description="Feature-level masking: block sides in tokens.")

    @model_validator(mode="after")
    def _check(self) -> "MaskingConfig":
        if self.scale_probs is not None and len(self.scale_probs) != len(self.scales):
            raise ValueError(f"scale_probs has {len(self.scale_probs)} entries for {len(self.scales)} scales")
        if any(s < 1 for s in self.scales + self.feature_scales):
            raise ValueError("block scales must be >= 1")
        return self

    def strategy_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the masking function beyond (batch, num_patches, ratio)."""
        if self.strategy == "multiscale":
            return {"scales": tuple(self.scales), "probs": tuple(self.scale_probs) if self.scale_probs else None}
        return {}

    def model_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of the MAE for feature-level masking."""
        return {"mask_ratio": self.ratio, "feature_mask_depths": tuple(self.feature_depths),
                "feature_mask_rate": self.feature_rate, "feature_mask_scales": tuple(self.feature_scales)}


class OptimizerConfig(Section):
    lr: float | None = Field(1e-3, gt=0, description="Absolute peak learning rate; None = base_lr * global_batch / 256.")
    base_lr: float = Field(1e-3, gt=0, description="Used only when lr is None (linear scaling rule).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decay; never applied to biases, norms, tokens, pos embeds.")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas (MAE's).")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    impl: Literal["torch_fused", "torch", "deepspeed_fused"] = Field("torch_fused", description=(
        "torch_fused: torch.optim.AdamW(fused=True) on CPU and GPU; deepspeed_fused: DeepSpeed FusedAdam (GPU)."))


class ScheduleConfig(Section):
    epochs: float = Field(100, gt=0, description="Length in epochs (ignored when max_steps is set).")
    max_steps: int | None = Field(None, gt=0, description="Length in optimizer steps; overrides epochs.")
    stop_at_step: int | None = Field(None, gt=0, description=(
        "Save a checkpoint and exit (code 0) after this optimizer step, without changing the schedule: for job "
        "slots shorter than the run. Rerun without it (or with a later step) to continue."))
    warmup_fraction: float = Field(0.1, ge=0, lt=1, description="Linear warmup over this fraction of all steps.")
    min_lr: float = Field(1e-5, ge=0, description="Floor of the half-cycle cosine decay.")


class DeepSpeedSection(Section):
    device: Literal["cuda", "cpu"] = Field("cuda", description=(
        "cuda: one GPU per rank (NCCL); start-up stops, saying what torch sees, when CUDA is unusable. cpu: CPU "
        "ranks over gloo (tests, demo, debugging); never chosen silently: set it (or pass --cpu)."))
    zero_stage: Literal[0, 1, 2] = Field(2, description=(
        "ZeRO stage: 1 partitions optimizer state, 2 also gradients. 0 (plain data parallel) only with fp32 "
        "precision: with bf16/fp16 DeepSpeed 0.19.8 cannot accumulate in fp32 at stage 0; use 1."))
    global_batch_size: int | None = Field(None, gt=0, description=(
        "Images per optimizer step over all ranks. Set: grad_accum_steps = global_batch_size / (micro_batch_size "
        "x world size), and a world size that cannot realise it exactly is refused at start-up; the same config "
        "then gives the same batch, lr and schedule on any number of GPUs. None = micro_batch_size x "
        "grad_accum_steps x world size."))
    micro_batch_size: int | None = Field(64, gt=0, description=(
        "Images per rank per forward pass. None (with global_batch_size) = global_batch_size / world size, "
        "i.e. no gradient accumulation."))
    grad_accum_steps: int | None = Field(None, gt=0, description=(
        "Micro-batches accumulated per optimizer step. None = derived from global_batch_size, or 1 without it."))
    gradient_clipping: float = Field(1.0, ge=0, description="Global gradient-norm clip (0 = off).")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field("auto", description=(
        "auto = bf16 on GPUs that have it natively (compute capability >= 8.0), fp16 with dynamic loss scaling "
        "on older ones, fp32 on CPU (bf16/fp16 there only where DeepSpeed's CPU accelerator has them: fp16 needs "
        "native fp16 instructions). With gradient accumulation, bf16 and fp16 accumulate gradients in fp32."))
    cpu_threads: int | None = Field(None, gt=0, description=(
        "Torch threads per rank on CPU ranks (device cpu). None = $OMP_NUM_THREADS when set, else the cores this "
        "rank may run on divided by the ranks on its node (2 ranks on 2 cores: 1 each): more threads than cores "
        "make the ranks' threads wait for each other."))
    timeout_minutes: float = Field(30.0, gt=0, description=(
        "Process-group timeout: a collective that waits longer (a hung or dead rank) fails the run instead of "
        "hanging it. Long side-work never holds ranks (the k-NN monitor runs beside training), and the S3 retry "
        "budget stays below it."))
    heartbeat_timeout_s: float = Field(60.0, ge=0, description=(
        "A rank whose heartbeat (a counter on the rendezvous store, bumped every sixth of this) stands still this "
        "long is lost: rank 0 names it (rank, host, address) and the run stops with exit code 5, instead of "
        "waiting out timeout_minutes in a collective (a cut network sends no reset). 0 = off."))
    activation_checkpointing: bool = Field(False, description="Recompute block activations to save memory.")
    compile: bool = Field(False, description=(
        "torch.compile the model (first steps are slow while it compiles). Checkpoints do not depend on it: a "
        "run resumes with compile switched on or off."))
    compile_scope: Literal["blocks", "model"] = Field("blocks", description=(
        "What deepspeed.compile compiles (fullgraph=True either way): 'blocks' each transformer block on its own, "
        "so gradient hooks fire block by block and ZeRO-2 reduces buckets during the backward; 'model' the whole "
        "forward + backward as one graph, whose gradients all appear when the backward ends, leaving the gradient "
        "reduction exposed (train/compiling.py; benchmarks/README.md \"Compiled backward and ZeRO-2\")."))
    compile_backend: str = Field("inductor", min_length=1, description=(
        "torch.compile backend: 'inductor' generates fused kernels (needs a C++ compiler on CPU, Triton on GPU); "
        "'aot_eager' traces forward and backward without code generation (a quick check that the model compiles)."))
    overrides: dict[str, Any] = Field(default_factory=dict, description=(
        "Extra keys merged into the generated DeepSpeed JSON (advanced; never needed for the paper's recipe)."))

    @model_validator(mode="after")
    def _check(self) -> "DeepSpeedSection":
        if self.micro_batch_size is None and self.global_batch_size is None:
            raise ValueError("micro_batch_size: null needs global_batch_size (it is global_batch_size / world size)")
        if self.zero_stage == 0 and self.precision in ("bf16", "fp16"):
            raise ValueError(f"zero_stage=0 with precision={self.precision}: DeepSpeed 0.19.8 keeps stage-0 "
                             "mixed-precision state in a wrapper that cannot accumulate gradients in fp32 nor "
                             "resume on another world size; use zero_stage 1 (the same communication as stage 0, "
                             "optimizer state partitioned) or 2")
        return self


class CheckpointConfig(Section):
    every_steps: int = Field(1000, gt=0, description=(
        "Save a checkpoint every N optimizer steps (and at the end): full fp32 weights, AdamW moments and the "
        "data position, independent of the number of GPUs (usfmae.checkpoint)."))
    every_minutes: float | None = Field(None, gt=0, description=(
        "Also save when this many minutes have passed since the last save (None = steps only). Rank 0's clock "
        "decides, at logging steps (logging.every_steps), and every rank follows: a save is collective."))
    keep_last: int = Field(3, gt=0, description="Checkpoints kept; older ones are deleted.")
    init_from: str | None = Field(None, description=(
        "Weights to start from: released USF-MAE .pt, MAE ImageNet checkpoint, or our .safetensors export."))
    max_bad_steps: int = Field(20, gt=0, description=(
        "Stop after this many consecutive steps skipped for a non-finite loss (on any rank; the step is skipped on "
        "every rank). Checked at logging and checkpoint steps, so the stop comes up to logging.every_steps - 1 "
        "steps after the limit is reached."))


class LoggingConfig(Section):
    every_steps: int = Field(10, gt=0, description=(
        "Write a metrics record every N steps (and at every checkpoint and the end): the loss averaged over every "
        "micro-batch of every rank since the previous record. Losses stay on the device in between (no host "
        "sync per step), so this is also how often non-finite losses are read (checkpoint.max_bad_steps)."))
    tensorboard: bool = Field(True, description="Also write TensorBoard scalars.")
    image_grid_every: int = Field(500, ge=0, description="Save an original/masked/reconstruction PNG every N steps (0 = off).")
    data_log: bool = Field(False, description=(
        "Audit trail: every rank writes data/rank{R}.jsonl with the sample keys and newly opened shards of each "
        "micro-batch (large on long runs; for debugging data order and resume)."))
    knn_every: int = Field(0, ge=0, description=(
        "Every N optimizer steps (and at the end), rank 0 measures frozen-encoder feature quality on "
        "`knn_data` (usfmae.eval.probe.monitor_knn: 5-fold k-NN and linear probe) on a copy of the weights in "
        "a background thread, and logs knn/* values when it is done; no rank waits for it (a measurement still "
        "running when the next is due is skipped and logged). Keep the set small (a few hundred images). 0 = off."))
    knn_data: str | None = Field(None, description=(
        "Class-folder tree (root/<class>/<images>) for the k-NN monitor; required when knn_every > 0."))

    @model_validator(mode="after")
    def _check(self) -> "LoggingConfig":
        if self.knn_every > 0 and not self.knn_data:
            raise ValueError(f"logging.knn_every={self.knn_every} needs logging.knn_data (a class-folder tree); "
                             "set it or use logging.knn_every=0")
        return self


class PretrainConfig(Section):
    seed: int = Field(0, description="Seed for weights, masking, shard order and augmentations.")
    output_dir: str = Field("runs/pretrain", description=(
        "Run directory: checkpoints, logs, resolved config, export. A folder every rank sees (one node, or a "
        "filesystem all nodes mount), or s3://bucket/prefix (data.s3_endpoint_url applies), which nothing else "
        "needs to share (usfmae.runstore)."))
    scratch_dir: str | None = Field(None, description=(
        "Node-local folder where an s3:// run directory's files are staged before upload (checkpoints, "
        "metrics.jsonl between uploads); each rank uses <scratch_dir>/rank<R>. None = "
        "$TMPDIR/usfmae-scratch/<hash of output_dir>. Unused for a local run directory."))
    data: DataConfig = Field(default_factory=DataConfig, description="Shards and loading.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="MAE architecture.")
    masking: MaskingConfig = Field(default_factory=MaskingConfig, description="Which patches are hidden.")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="AdamW.")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="Length and lr schedule.")
    deepspeed: DeepSpeedSection = Field(default_factory=DeepSpeedSection, description="Engine settings.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Saving and resuming.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logs and images.")

    @model_validator(mode="after")
    def _check(self) -> "PretrainConfig":
        if self.data.weights is not None and len(self.data.weights) != len(self.data.shards):
            raise ValueError(f"data.weights has {len(self.data.weights)} entries but data.shards has "
                             f"{len(self.data.shards)}")
        from .data.s3 import request_limit_s

        timeout_s = self.deepspeed.timeout_minutes * 60
        budget, request = self.s3_retry_budget_s(), request_limit_s(self.data.s3_timeout_s)
        if any(s.startswith("s3://") for s in self.data.shards) and (budget <= 0 or budget + request >= timeout_s):
            raise ValueError(f"data.s3_retry_budget_s={budget:g} s plus one S3 request's time-outs ({request:g} s: "
                             f"2 x data.s3_timeout_s) must stay below deepspeed.timeout_minutes="
                             f"{self.deepspeed.timeout_minutes:g} ({timeout_s:g} s): lower the budget or raise the timeout")
        return self

    def s3_retry_budget_s(self) -> float:
        """Seconds the S3 reads of one shuffle window may spend retrying: data.s3_retry_budget_s, default half of
        what the process-group timeout leaves after one request's time-outs (a micro-batch can wait for two
        windows of a source)."""
        from .data.s3 import request_limit_s

        budget = self.data.s3_retry_budget_s
        return budget if budget is not None else \
            (self.deepspeed.timeout_minutes * 60 - request_limit_s(self.data.s3_timeout_s)) / 2


# ---------------------------------------------------------------------------- loading
C = TypeVar("C", bound=BaseModel)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        got = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""
        lines.append(f"  {key}: {e['msg']}{got}")
    return f"invalid configuration in {source}:\n" + "\n".join(lines)


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for i, k in enumerate(keys[:-1]):
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: {'.'.join(keys[:i + 1])} is not a section")
        node = nxt
    node[keys[-1]] = value


def parse_overrides(pairs: list[str] | None) -> list[tuple[str, Any]]:
    """['a.b=3', 'c=[1,2]'] -> [('a.b', 3), ('c', [1, 2])]; values are parsed as YAML."""
    out = []
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set expects dotted.key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        if not key.strip():
            raise ConfigError(f"--set {pair!r}: empty key")
        out.append((key.strip(), yaml.safe_load(raw) if raw.strip() else None))
    return out


def packaged_configs() -> Path:
    """The configs shipped with the package: usfmae/configs, a symlink to the top-level configs/ in a checkout
    (where the README's commands name them), real files in an installed wheel."""
    return Path(str(files("usfmae") / "configs"))


def config_path(value: str | Path) -> Path:
    """A --config value as a file: an existing path, else a packaged config by name, with or without .yaml
    (`pretrain_tiny`, `datasets/openus46.yaml`). Raises ConfigError naming the value and the packaged names."""
    path = Path(value)
    if path.is_file():
        return path
    root = packaged_configs()
    if path.name and not path.is_absolute():  # a name, not a path that happens to be missing ("" has no name)
        packaged = root / (path if path.suffix in (".yaml", ".yml") else path.with_name(path.name + ".yaml"))
        if packaged.is_file():
            return packaged
    names = sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))
    raise ConfigError(f"config file not found: {value} (neither a file nor a packaged config; packaged: "
                      f"{', '.join(names)})")


def flag_overrides(overrides: list[str] | None, flags: dict[str, Any]) -> list[str]:
    """The `--set` pairs, then `key=value` for each command-line flag that was given: the one way entry
    points turn their flags into overrides (a flag wins over --set). A flag is absent when it is None, empty
    or an empty list (a store_true flag passes `value if args.flag else None`); False and 0 are values. Values
    are JSON-encoded, which YAML reads back unchanged (a path stays a string, a list of shards a list)."""
    given = {key: value for key, value in flags.items() if value is not None and value != "" and value != []}
    return [*(overrides or []), *(f"{key}={json.dumps(value)}" for key, value in given.items())]


def load_config(model: type[C], path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> C:
    """Validate YAML file `path` (optional; a path or a packaged name, see config_path) plus `--set` overrides
    into `model`."""
    data: dict = dict(base or {})
    source = "defaults"
    if path is not None:
        p = config_path(path)
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        data.update(loaded)
        source = str(p)
    for key, value in parse_overrides(overrides):
        _set_dotted(data, key, value)
        source += f" + --set {key}"
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def save_resolved(cfg: BaseModel, run_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the fully resolved config as plain YAML into the run directory."""
    out = Path(run_dir) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    tmp.replace(out)
    return out
