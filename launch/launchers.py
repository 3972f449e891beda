"""Launchers: the same `objectax train` on every TPU-pod worker, or on every SLURM task.

    objectax launch tpu --tpu NAME --zone ZONE [--project P] [--sync] [--max_restarts R]
        [--dry_run] -- TRAIN FLAGS
    objectax launch slurm --nodes N --gpus_per_node G [--process_per host|gpu]
        [--signal_grace_s S] [--dry_run] -- TRAIN FLAGS

`--dry_run` prints exactly what would run (the gcloud commands; the sbatch script and the
sbatch command) and runs nothing. It is a launcher flag, so it goes before `--`; after `--`
it would reach `objectax train`, so it is refused there. Every value that goes into the
sbatch header or the gcloud command is checked before anything is written or run, with one
error line naming the flag and its valid form.

Preemption: `objectax train` saves a checkpoint on SIGTERM and exits with EXIT_PREEMPTED
(75, launch/preemption.py); the same command resumes. The SLURM job is requeueable and gets
SIGTERM `--signal_grace_s` seconds before its time limit; on status 75 the script requeues
the job. On TPU the launcher reruns the train command while it exits with 75, at most
`--max_restarts` times.

The processes find each other by themselves: a TPU pod
slice and a SLURM job are detected by `jax.distributed.initialize()` (launch/distributed.py),
so the train flags are the same as on one host; only the workdir must be a path every host
can write (a shared filesystem; on TPU VMs a bucket mounted with gcsfuse, e.g.
/gcs/BUCKET/run, set up by --env_setup).

XLA GPU flags: `GPU_XLA_FLAGS` below, the latency-hiding scheduler and pipelined / combined
collectives that overlap FSDP's all-gathers and reduce-scatters with compute (the flags
MaxText and NVIDIA's JAX examples set); every one is checked to parse with this jaxlib
(tests/launch/test_launchers.py), since XLA aborts on an unknown flag.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys

from objectax.launch.preemption import EXIT_PREEMPTED

GPU_XLA_FLAGS = (
    "--xla_gpu_enable_latency_hiding_scheduler=true",
    "--xla_gpu_enable_triton_gemm=false",
    "--xla_gpu_enable_highest_priority_async_stream=true",
    "--xla_gpu_enable_pipelined_all_gather=true",
    "--xla_gpu_enable_pipelined_reduce_scatter=true",
    "--xla_gpu_enable_pipelined_all_reduce=true",
    "--xla_gpu_enable_while_loop_double_buffering=true",
    "--xla_gpu_all_reduce_combine_threshold_bytes=134217728",
    "--xla_gpu_all_gather_combine_threshold_bytes=134217728",
    "--xla_gpu_reduce_scatter_combine_threshold_bytes=67108864",
)


def train_command(train_flags: list[str]) -> str:
  """The command every process runs: `objectax train` with the user's flags, shell-quoted."""
  return shlex.join(["objectax", "train", *train_flags])


def tpu_commands(args: argparse.Namespace) -> list[list[str]]:
  """gcloud commands: optionally copy this checkout to every worker and install it, then
  run the same train command on all workers at once."""
  where = [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])
  ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.tpu, *where, "--worker=all"]
  commands = []
  if args.sync:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commands.append(["gcloud", "compute", "tpus", "tpu-vm", "scp", "--recurse", repo,
                     f"{args.tpu}:~/objectax", *where, "--worker=all"])
    commands.append([*ssh, "--command=pip install -q -e ~/objectax 'jax[tpu]'"])
  commands.append([*ssh, f"--command={args.env_setup + ' && ' if args.env_setup else ''}"
                         f"{train_command(args.train_flags)}"])
  return commands


def slurm_script(args: argparse.Namespace) -> str:
  """An sbatch script: N nodes, one process per GPU (or per host), GPU XLA flags preset."""
  per_gpu = args.process_per == "gpu"
  tasks_per_node = args.gpus_per_node if per_gpu else 1
  lines = [
      "#!/bin/bash",
      f"#SBATCH --job-name={args.job_name}",
      f"#SBATCH --nodes={args.nodes}",
      f"#SBATCH --ntasks-per-node={tasks_per_node}",
      f"#SBATCH --gpus-per-node={args.gpus_per_node}",
      f"#SBATCH --cpus-per-task={args.cpus_per_task}",
      f"#SBATCH --time={args.time}",
      "#SBATCH --output=%x-%j.out",
      "#SBATCH --open-mode=append",
      *([f"#SBATCH --partition={args.partition}"] if args.partition else []),
      "#SBATCH --requeue",
      f"#SBATCH --signal=TERM@{args.signal_grace_s}",
      "",
      "# One jax process per " + ("GPU: JAX reads SLURM_LOCALID and takes that GPU"
                                  if per_gpu else "host: each process drives all its GPUs"),
      f"export XLA_FLAGS={shlex.quote(' '.join(GPU_XLA_FLAGS))}",
      "export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92",
      *([args.env_setup] if args.env_setup else []),
      "",
      f"# Exit status {EXIT_PREEMPTED}: SIGTERM made the run save a checkpoint; the requeued "
      "job resumes from it",
      f"srun {train_command(args.train_flags)}",
      f'status=$?; if [ "$status" -eq {EXIT_PREEMPTED} ]; then scontrol requeue '
      '"$SLURM_JOB_ID"; fi; exit "$status"',
      "",
  ]
  return "\n".join(lines)


class _OneLineParser(argparse.ArgumentParser):
  """A usage mistake (unknown flag, bad value, missing argument) in one line; argparse's
  own error prints the usage first."""

  def error(self, message: str):
    self.exit(2, f"objectax: error: {' '.join(message.split())}; see {self.prog} --help\n")


def _parser() -> argparse.ArgumentParser:
  parser = _OneLineParser(prog="objectax launch", description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="target", required=True)
  tpu = sub.add_parser("tpu", help="run on every worker of a Cloud TPU VM pod slice")
  tpu.add_argument("--tpu", required=True, help="TPU VM name")
  tpu.add_argument("--zone", required=True)
  tpu.add_argument("--project", default="")
  tpu.add_argument("--sync", action="store_true",
                   help="first copy this checkout to ~/objectax on every worker and install it")
  tpu.add_argument("--max_restarts", default="20",
                   help=f"rerun the train command at most this many times while it exits with "
                        f"{EXIT_PREEMPTED} (preempted after saving a checkpoint)")
  slurm = sub.add_parser("slurm", help="submit an sbatch job over multi-GPU hosts")
  # The integers are parsed by _validate, so that a bad value is one error line.
  slurm.add_argument("--nodes", required=True)
  slurm.add_argument("--gpus_per_node", default="8")
  slurm.add_argument("--process_per", choices=("gpu", "host"), default="gpu")
  slurm.add_argument("--cpus_per_task", default="8")
  slurm.add_argument("--time", default="24:00:00", help="MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM "
                                                        "or D-HH:MM:SS")
  slurm.add_argument("--signal_grace_s", default="300",
                     help="SLURM sends SIGTERM this many seconds before the time limit; the "
                          f"run saves a checkpoint, exits {EXIT_PREEMPTED} and is requeued")
  slurm.add_argument("--partition", default="")
  slurm.add_argument("--job_name", default="objectax")
  slurm.add_argument("--script", default="objectax.sbatch", help="where to write the script")
  for p in (tpu, slurm):
    p.add_argument("--env_setup", default="",
                   help="one line of shell run before training on each host, e.g. "
                        "'source ~/venv/bin/activate'")
    p.add_argument("--dry_run", "--dry-run", action="store_true",
                   help="print what would run; run nothing")
  return parser


# The valid forms, each as the error line states it.
_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # a SLURM job name
_PARTITIONS = re.compile(r"[A-Za-z0-9_.,-]+")  # one SLURM partition, or several with commas
_GCP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")  # a TPU name, zone or project
_SLURM_TIME = re.compile(r"[0-9]+(:[0-9]{1,2}){0,2}|[0-9]+-[0-9]{1,2}(:[0-9]{1,2}){0,2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _positive_int(value: str, minimum: int = 1) -> int | None:
  return int(value) if value.isascii() and value.isdigit() and int(value) >= minimum else None


def slurm_seconds(time: str) -> int:
  """A valid SLURM --time in seconds: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS."""
  days, _, rest = time.rpartition("-")
  parts = [int(x) for x in rest.split(":")]
  if days:  # D-HH[:MM[:SS]]
    hours, minutes, seconds = (parts + [0, 0])[:3]
    return ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
  if len(parts) == 3:
    return (parts[0] * 60 + parts[1]) * 60 + parts[2]
  return parts[0] * 60 + (parts[1] if len(parts) == 2 else 0)  # MM[:SS]


def _validate(args: argparse.Namespace) -> str | None:
  """The first launcher flag with a value that could break the script or the command, as
  one error line naming the flag and its valid form; None when all are valid. The integer
  flags are converted in place."""
  if _CONTROL.search(args.env_setup):
    return "--env_setup must be one line of shell (no newline or control characters)"
  if args.target == "tpu":
    for flag, value in (("--tpu", args.tpu), ("--zone", args.zone), ("--project", args.project)):
      if (value or flag != "--project") and not _GCP_NAME.fullmatch(value):
        return (f"{flag} {value!r} is not a valid name: use letters, digits and "
                "'-', '_', '.', ':' only, starting with a letter or digit")
    restarts = _positive_int(args.max_restarts, minimum=0)
    if restarts is None:
      return f"--max_restarts {args.max_restarts!r} must be an integer >= 0"
    args.max_restarts = restarts
    return None
  for flag in ("--nodes", "--gpus_per_node", "--cpus_per_task", "--signal_grace_s"):
    name = flag[2:]
    number = _positive_int(getattr(args, name))
    if number is None:
      return f"{flag} {getattr(args, name)!r} must be a positive integer"
    setattr(args, name, number)
  if not _NAME.fullmatch(args.job_name):
    return (f"--job_name {args.job_name!r} is not a valid job name: use letters, digits and "
            "'_', '.', '-' only")
  if args.partition and not _PARTITIONS.fullmatch(args.partition):
    return (f"--partition {args.partition!r} is not a valid partition: use letters, digits and "
            "'_', '.', '-', with ',' between partitions")
  if not _SLURM_TIME.fullmatch(args.time):
    return (f"--time {args.time!r} is not a SLURM time: use MM, MM:SS, HH:MM:SS, D-HH, "
            "D-HH:MM or D-HH:MM:SS")
  limit = slurm_seconds(args.time)  # 0: no time limit
  if args.signal_grace_s > 65535:
    return f"--signal_grace_s {args.signal_grace_s} must be a positive integer <= 65535"
  if 0 < limit <= args.signal_grace_s:
    return (f"--signal_grace_s {args.signal_grace_s} must be shorter than --time {args.time} "
            f"({limit} s)")
  if not args.script or _CONTROL.search(args.script):
    return f"--script {args.script!r} must be a file path without newline or control characters"
  return None


def _error(message: str) -> int:
  print(f"objectax: error: {message}", file=sys.stderr)
  return 2


def _run_once(command: list[str]) -> int | str:
  """The exit status of `command`, or one error line when it could not start."""
  try:
    return subprocess.run(command, check=False).returncode
  except OSError as e:
    return f"could not run {command[0]}: {e.strerror or e}"


def _run_train_with_restarts(command: list[str], max_restarts: int) -> int | str:
  """Run the train command; while it exits with EXIT_PREEMPTED (it saved a checkpoint after
  SIGTERM), run the same command again, which resumes, at most max_restarts times."""
  restarts = 0
  while True:
    status = _run_once(command)
    if status != EXIT_PREEMPTED:
      return status
    if restarts == max_restarts:
      print(f"objectax launch: train exited {EXIT_PREEMPTED} (preempted, checkpoint saved) "
            f"after {max_restarts} restarts; --max_restarts reached, not rerunning",
            file=sys.stderr, flush=True)
      return status
    restarts += 1
    print(f"objectax launch: train exited {EXIT_PREEMPTED} (preempted, checkpoint saved); "
          f"rerunning it to resume, restart {restarts} of {max_restarts}",
          file=sys.stderr, flush=True)


def run(argv: list[str]) -> int:
  """argv: launcher flags, then `--`, then the train flags."""
  split = argv.index("--") if "--" in argv else len(argv)
  args = _parser().parse_args(argv[:split])
  args.train_flags = argv[split + 1:]
  if any(f.split("=", 1)[0] in ("--dry_run", "--dry-run") for f in args.train_flags):
    return _error("--dry_run after -- would go to objectax train, not the launcher; put it "
                  "before --")
  if not any(f.startswith("--workdir") for f in args.train_flags):
    return _error("pass --workdir=... after -- (a path every host can write: a shared "
                  "filesystem, or a gcsfuse mount such as /gcs/BUCKET/run)")
  problem = _validate(args)
  if problem:
    return _error(problem)
  tool = "gcloud" if args.target == "tpu" else "sbatch"
  if not args.dry_run and shutil.which(tool) is None:
    where = "a machine with the Google Cloud CLI" if tool == "gcloud" else "a SLURM login node"
    what = "commands" if tool == "gcloud" else "script"
    return _error(f"{tool} not found on PATH; run this on {where}, or use --dry_run to print "
                  f"the {what}")
  if args.target == "tpu":
    commands = tpu_commands(args)
  else:
    script = slurm_script(args)
    commands = [["sbatch", args.script]]
    print(f"# {args.script}\n{script}")
    if not args.dry_run:
      try:
        with open(args.script, "w") as f:
          f.write(script)
      except OSError as e:
        return _error(f"could not write --script {args.script}: {e.strerror or e}")
  for i, command in enumerate(commands):
    print(shlex.join(command), flush=True)
    if args.dry_run:
      continue
    train = args.target == "tpu" and i == len(commands) - 1
    status = (_run_train_with_restarts(command, args.max_restarts) if train
              else _run_once(command))
    if isinstance(status, str):
      return _error(status)
    if status:
      return status
  return 0
