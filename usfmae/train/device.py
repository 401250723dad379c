"""Which device a rank trains on and in which precision; no silent fallback to the CPU.

Each rank touches only its own GPU (cuda:LOCAL_RANK) and asks that GPU, not cuda:0, what it supports.
bf16 is chosen only where it is native (compute capability >= 8.0: Ampere and later); `is_bf16_supported()`
also counts emulation, which is slow, so it is not used. Older GPUs get fp16 with dynamic loss scaling.
CPU ranks run what DeepSpeed's CPU accelerator supports on this CPU (cpu_supports): fp16 only where the CPU
has native fp16 instructions (AVX512-FP16, AMX-FP16).
A GPU the installed torch has no kernels for (its `get_arch_list()`: sm_75 and newer for the pinned CUDA 13.0
wheel, so no V100 / P100), or a driver older than torch's CUDA, is refused at start-up (supported_gpu_problem).
"""

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ConfigError

BF16_MIN_CAPABILITY = (8, 0)


class DeviceError(RuntimeError):
    """Launched for GPUs but CUDA is unusable; the message says what torch sees."""


@dataclass(frozen=True)
class Device:
    torch_device: torch.device
    backend: str  # process-group backend: nccl or gloo
    capability: tuple[int, int] | None  # of this rank's GPU

    @property
    def type(self) -> str:
        return self.torch_device.type


def cuda_report() -> str:
    """What torch sees of CUDA: versions, devices, the driver, and the initialisation error if any."""
    lines = [f"torch {torch.__version__} built for CUDA {torch.version.cuda or 'none (a CPU-only wheel)'}",
             f"torch.cuda.is_available() = {torch.cuda.is_available()}, device_count() = {torch.cuda.device_count()}",
             f"CUDA_VISIBLE_DEVICES = {os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}"]
    try:
        torch.cuda.init()
    except Exception as e:  # noqa: BLE001 - the reason is what we report
        lines.append(f"CUDA initialisation failed: {type(e).__name__}: {e}")
    try:
        driver = torch._C._cuda_getDriverVersion()  # e.g. 12080 = the newest CUDA the driver supports, 12.8
        lines.append(f"driver supports CUDA up to {driver // 1000}.{driver % 1000 // 10}" if driver else
                     "no NVIDIA driver found by the CUDA runtime")
    except Exception:  # noqa: BLE001 - CPU-only builds lack the call
        pass
    proc = Path("/proc/driver/nvidia/version")
    if proc.is_file():
        lines.append("kernel module: " + proc.read_text().splitlines()[0].strip())
    from ..doctor import CUDA_DRIVER_HINT

    lines.append(f"hint: {CUDA_DRIVER_HINT}; in Docker run with --gpus all; `usfmae doctor` checks the rest")
    return "\n  ".join(lines)


def select_device(requested: str, local_rank: int) -> Device:
    """This rank's device; for cuda, sets it current before anything else touches CUDA."""
    if requested == "cpu":
        return Device(torch.device("cpu"), "gloo", None)
    if not torch.cuda.is_available():
        raise DeviceError("deepspeed.device=cuda but CUDA is unusable, so this run would silently train on CPU "
                          "ranks; stopping. What torch sees:\n  " + cuda_report() +
                          "\nTo train on CPUs on purpose: --cpu (or --set deepspeed.device=cpu).")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise DeviceError(f"local rank {local_rank} but this node shows {count} GPU(s): start at most {count} ranks "
                          "per node (deepspeed --num_gpus / hostfile slots)")
    capability = tuple(torch.cuda.get_device_capability(local_rank))
    problem = supported_gpu_problem(capability, torch.cuda.get_arch_list(), driver_cuda_version(), torch.version.cuda)
    if problem:
        raise DeviceError(f"local rank {local_rank}: {problem}")
    torch.cuda.set_device(local_rank)
    return Device(torch.device("cuda", local_rank), "nccl", capability)


def driver_cuda_version() -> int | None:
    """The newest CUDA the NVIDIA driver supports, as 1000 x major + 10 x minor (12080 = 12.8); None unknown."""
    try:
        return torch._C._cuda_getDriverVersion() or None
    except Exception:  # noqa: BLE001 - CPU-only builds lack the call
        return None


def _arch_version(arch: str) -> tuple[str, int, int]:
    """'sm_86' -> ('sm', 8, 6); 'compute_90a' -> ('compute', 9, 0)."""
    kind, _, num = arch.partition("_")
    num = num.rstrip("af")
    return kind, int(num[:-1]), int(num[-1])


def supported_gpu_problem(capability: tuple[int, int], arch_list: list[str], driver: int | None,
                          runtime: str | None) -> str | None:
    """Why torch cannot run on a GPU of `capability` here (None: it can). Kernels: a cubin sm_XY runs on the
    same major X at minor >= Y, PTX compute_XY on any capability >= X.Y (JIT). Driver: it must support torch's
    CUDA major version (minor version compatibility covers the rest)."""
    cc = f"{capability[0]}.{capability[1]}"
    runs = False
    for arch in arch_list:
        kind, major, minor = _arch_version(arch)
        runs |= (kind == "sm" and major == capability[0] and minor <= capability[1]) or \
            (kind == "compute" and (major, minor) <= capability)
    cubins = [f"{m}.{n}" for m, n in sorted({(m, n) for k, m, n in map(_arch_version, arch_list) if k == "sm"})]
    if arch_list and not runs:
        return (f"this GPU (compute capability {cc}) is not supported by torch {torch.__version__} (CUDA "
                f"{runtime}), which has kernels for compute capability {', '.join(cubins)} ({' '.join(arch_list)}): "
                f"supported are GPUs of compute capability >= {cubins[0]} (Turing T4 / RTX 20xx and newer; bf16 "
                f"from {BF16_MIN_CAPABILITY[0]}.{BF16_MIN_CAPABILITY[1]}); older GPUs (V100 7.0, P100 6.0) need a "
                "torch build with their kernels, which this project does not test")
    if runtime and driver is not None and driver // 1000 < int(runtime.split(".")[0]):
        from ..doctor import CUDA_DRIVER_HINT

        return (f"the NVIDIA driver supports CUDA up to {driver // 1000}.{driver % 1000 // 10}, but torch "
                f"{torch.__version__} is built for CUDA {runtime}: update the driver ({CUDA_DRIVER_HINT})")
    if runtime and driver is None:
        return "no NVIDIA driver version could be read (torch._C._cuda_getDriverVersion): is the driver loaded?"
    return None


def cpu_supports(precision: str) -> bool:
    """Whether DeepSpeed's accelerator runs `precision` on CPU ranks of this machine: the check
    deepspeed.initialize applies (its CPU accelerator: bf16 always, fp16 only with oneDNN fp16 support,
    i.e. native fp16 instructions). The one place the code and the tests ask."""
    if precision == "fp32":
        return True
    from deepspeed.accelerator import get_accelerator

    return bool(getattr(get_accelerator(), f"is_{precision}_supported")())


def resolve_precision(requested: str, device: Device) -> str:
    """fp32 / bf16 / fp16 for `deepspeed.precision` on this device."""
    if device.type == "cpu":
        # CPU ranks run bf16 and fp16 too (DeepSpeed's CPU accelerator; slow), but only when asked for.
        precision = "fp32" if requested == "auto" else requested
        if not cpu_supports(precision):
            instead = "bf16" if cpu_supports("bf16") else "fp32"
            raise ConfigError(f"deepspeed.precision={precision} on CPU ranks, but DeepSpeed's accelerator reports "
                              f"no {precision} on this CPU (is_{precision}_supported() is false: fp16 needs native "
                              f"fp16 instructions, AVX512-FP16 or AMX-FP16): use --set deepspeed.precision={instead}")
        return precision
    native_bf16 = device.capability is not None and device.capability >= BF16_MIN_CAPABILITY
    if requested == "auto":
        return "bf16" if native_bf16 else "fp16"
    if requested == "bf16" and not native_bf16:
        raise ConfigError(f"deepspeed.precision=bf16 but this GPU (compute capability {device.capability}) has no "
                          "native bf16 (it would be emulated, slowly): use auto or fp16")
    return requested


def cpu_threads(requested: int | None, env=os.environ) -> tuple[int, str]:
    """Torch threads for a CPU rank, and where the number comes from: deepspeed.cpu_threads, else
    $OMP_NUM_THREADS (set by hand, by `deepspeed --bind_cores_to_rank` or by torchrun), else
    cores_per_local_rank."""
    if requested is not None:
        return requested, "deepspeed.cpu_threads"
    if env.get("OMP_NUM_THREADS"):
        value = env["OMP_NUM_THREADS"]
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"OMP_NUM_THREADS={value!r} is not a positive whole number: unset it or fix it "
                              "(or set deepspeed.cpu_threads)")
        return int(value), "OMP_NUM_THREADS"
    return cores_per_local_rank(env)


def cores_per_local_rank(env=os.environ) -> tuple[int, str]:
    """The cores this process may run on (its affinity mask: taskset, cgroup cpusets) divided by the ranks on
    its node ($LOCAL_WORLD_SIZE from torchrun, $LOCAL_SIZE from the deepspeed launcher), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local = int(env.get("LOCAL_WORLD_SIZE") or env.get("LOCAL_SIZE") or 1)
    return max(1, cores // local), f"{cores} cores / {local} rank(s) on this node"


def loader_workers(requested: int | None, device_type: str, env=os.environ) -> tuple[int, str]:
    """DataLoader workers per rank, and where the number comes from (config.DataConfig.num_workers): a GPU rank
    leaves one of its cores to its own process (kernel launches, DeepSpeed) and gives the rest to decoding."""
    if requested is not None:
        return requested, "data.num_workers"
    if device_type == "cpu":
        return 1, "CPU ranks: 1 (their cores run the torch threads)"
    per_rank, why = cores_per_local_rank(env)
    return max(1, per_rank - 1), f"{why}, minus 1 for the rank"


def param_dtype(precision: str) -> torch.dtype:
    """The dtype DeepSpeed gives the model's parameters, which inputs must match."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


SHM_DIR = Path("/dev/shm")


def release_shm_allreduce(env=os.environ, shm_dir: Path = SHM_DIR) -> Path | None:
    """Unlink this rank's DeepSpeed CPU all-reduce buffer once every local rank has mapped it.

    With all ranks on one machine, DeepSpeed's CPU backend maps a shared-memory workspace per rank,
    /dev/shm/deepspeed_allreduce_buffer_<uid>_<MASTER_ADDR>_<MASTER_PORT>_<rank> (~67 MB), and never
    unlinks it: every CPU run left 67 MB per rank in RAM-backed /dev/shm until the machine swapped. Peers
    open it by name only inside init_distributed, so after a barrier the name can go; the mappings live on
    until the processes exit, and nothing is left behind even after a SIGKILL. Call after the barrier.
    Returns the removed path (None when there was none: GPUs, or ranks on several machines).
    """
    rank = env.get("RANK")
    if rank is None:
        return None
    name = f"deepspeed_allreduce_buffer_{os.getuid()}_{env.get('MASTER_ADDR', '')}_{env.get('MASTER_PORT', '')}_{rank}"
    path = shm_dir / name
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    return path
