"""`usfmae`: one command over the project's entry points.

    usfmae build-shards --input data/echo --output s3://bucket/shards/echo   # preprocessing/build_shards.py
    usfmae clean --input data/hospital --output qa/hospital [--sheet]      # preprocessing/clean_images.py
    usfmae pretrain --config pretrain_tiny --shards shards/b                 # launch/pretrain.py, one process
    usfmae pretrain --nproc 8 --config configs/pretrain_vitb16_throughput.yaml ...  # execs deepspeed --num_gpus 8
    usfmae pretrain --dry-run --nproc 64 --config ... --shards ...           # the plan at 64 ranks, as JSON
    usfmae finetune --checkpoint runs/usfmae/model.safetensors --data ...    # launch/finetune.py
    usfmae finetune --task segmentation --checkpoint ... --data data/seg ... # lesion masks, Dice/IoU
    usfmae export --checkpoint runs/usfmae --format timm --out enc.safetensors
    usfmae inspect shards/b [--sheet contact.png]                           # samples per dataset and shard
    usfmae doctor [--s3 s3://bucket/prefix] [--output runs/]                 # environment checks

Every command calls the `main(argv)` of its module in usfmae/commands/ (COMMANDS; the scripts in preprocessing/
and launch/ call the same), so every option and exit code is theirs: `usfmae COMMAND --help`.
`--config` takes a path or the name of a packaged config (`--config pretrain_tiny`).
"""

import importlib
import os
import shutil
import sys
from pathlib import Path
from typing import NamedTuple

from .netguard import OFFLINE_ENV
from .ports import free_port


class Command(NamedTuple):
    """One `usfmae` command: its module in usfmae/commands/ (holding main(argv)), its line in `usfmae --help`,
    and whether it runs with usfmae.netguard's OFFLINE_ENV defaults (no telemetry, no hub look-ups, unless the
    caller set them; never for `doctor`, which reports the environment as the user has it)."""
    module: str
    summary: str
    offline: bool


COMMANDS = {
    "build-shards": Command("build_shards", "clean and shard a corpus on Ray (also: python "
                            "preprocessing/build_shards.py)", offline=True),
    "clean": Command("clean_images", "clean a folder of inputs for QA, no Ray: frame, mask, stats "
                     "(preprocessing/clean_images.py)", offline=True),
    "pretrain": Command("pretrain", "MAE pretraining (launch/pretrain.py; --nproc N runs it under the deepspeed "
                        "launcher)", offline=True),
    "finetune": Command("finetune", "fine-tune and evaluate a pretrained encoder (launch/finetune.py; --task "
                        "segmentation)", offline=True),
    "export": Command("export", "write weights readable without DeepSpeed (MAE or timm format)", offline=False),
    "inspect": Command("inspect_shards", "samples per dataset and shard, and a contact sheet of random samples",
                       offline=False),
    "doctor": Command("doctor", "check tesseract, torch/CUDA/NCCL, DeepSpeed ops, Ray, S3, disk and /dev/shm",
                      offline=False),
}
PRETRAIN_NOTE = """\
usfmae pretrain runs ONE process (one GPU, or the CPU). Multi-rank runs go through the DeepSpeed launcher:
  usfmae pretrain --nproc N [--master-port P] ARGS...
      execs: deepspeed --num_gpus N --module usfmae.commands.pretrain ARGS...
  deepspeed --hostfile hostfile launch/pretrain.py ARGS...   several nodes (see docker/README.md)
  usfmae pretrain --dry-run [--nproc N | --world-size N] ARGS...   the plan (batch split, lr, steps) as JSON
usfmae options: --nproc N (ranks on this node), --master-port P (rendezvous port with --nproc).
"""


class CliError(RuntimeError):
    """A usage problem of the CLI itself (not of the command it runs)."""


def run_command(command: str, argv: list[str]) -> int:
    """The command's main(argv), imported on use (`usfmae --help` stays quick)."""
    module = importlib.import_module(f"usfmae.commands.{COMMANDS[command].module}")
    return int(module.main(argv) or 0)


def split_pretrain_args(argv: list[str]) -> tuple[int | None, int | None, list[str]]:
    """(--nproc, --master-port, the rest for launch/pretrain.py); accepts `--opt V` and `--opt=V`."""
    nproc = port = None
    rest: list[str] = []
    it = iter(argv)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in ("--nproc", "--master-port"):
            if not eq:
                value = next(it, None)
                if value is None:
                    raise CliError(f"{name} needs a value")
            if not value.isdigit() or int(value) < 1:
                raise CliError(f"{name} must be a positive integer, got {value!r}")
            if name == "--nproc":
                nproc = int(value)
            else:
                port = int(value)
        else:
            rest.append(arg)
    return nproc, port, rest


def deepspeed_command(nproc: int, master_port: int | None, script_argv: list[str]) -> list[str]:
    """The deepspeed launcher invocation that runs usfmae.commands.pretrain on `nproc` local ranks (as a module,
    `python -m`: an installed wheel has no launch/ script)."""
    launcher = Path(sys.executable).with_name("deepspeed")
    if not launcher.is_file():
        found = shutil.which("deepspeed")
        if not found:
            raise CliError("the deepspeed launcher is not installed beside this Python nor on PATH")
        launcher = Path(found)
    port = ["--master_port", str(master_port)] if master_port else []
    return [str(launcher), *port, "--num_gpus", str(nproc), "--module", "usfmae.commands.pretrain",
            *script_argv]


def single_process_env() -> None:
    """Rank 0 of 1 on loopback when no launcher set the rendezvous (DeepSpeed would look for MPI)."""
    if "WORLD_SIZE" in os.environ:
        return
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))


def pretrain(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(PRETRAIN_NOTE)
        return run_command("pretrain", ["--help"])
    nproc, port, rest = split_pretrain_args(argv)
    if "--dry-run" in rest:  # the plan only: no launcher, no process group; --nproc N plans for N ranks
        if nproc and not any(a.startswith("--world-size") for a in rest):
            rest += ["--world-size", str(nproc)]
        return run_command("pretrain", rest)
    if nproc:
        cmd = deepspeed_command(nproc, port, rest)
        print("[usfmae] exec " + " ".join(cmd), file=sys.stderr, flush=True)
        sys.stdout.flush()
        os.execv(cmd[0], cmd)
    print("[usfmae] pretraining in one process; for N ranks use `usfmae pretrain --nproc N ...` "
          "or `deepspeed launch/pretrain.py ...` (usfmae pretrain --help)", file=sys.stderr, flush=True)
    single_process_env()
    return run_command("pretrain", rest)


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: usfmae COMMAND [ARGS...]   (usfmae COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"usfmae: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if COMMANDS[command].offline:
        for key, value in OFFLINE_ENV.items():
            os.environ.setdefault(key, value)
    try:
        # pretrain's own options (--nproc, --master-port) choose the launcher before its main runs
        return pretrain(rest) if command == "pretrain" else run_command(command, rest)
    except CliError as err:
        print(f"usfmae {command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
