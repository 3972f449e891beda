"""Launchers: the same `objectax train` on every TPU-pod worker, or on every SLURM task.

    objectax launch tpu --tpu NAME --zone ZONE [--project P] [--sync] [--dry_run] -- TRAIN FLAGS
    objectax launch slurm --nodes N --gpus_per_node G [--process_per host|gpu] [--dry_run] -- TRAIN FLAGS

`--dry_run` prints exactly what would run (the gcloud commands; the sbatch script and the
sbatch command) and runs nothing. The processes find each other by themselves: a TPU pod
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
import shlex
import subprocess
import sys

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
      *([f"#SBATCH --partition={args.partition}"] if args.partition else []),
      "",
      "# One jax process per " + ("GPU: JAX reads SLURM_LOCALID and takes that GPU"
                                  if per_gpu else "host: each process drives all its GPUs"),
      f"export XLA_FLAGS={shlex.quote(' '.join(GPU_XLA_FLAGS))}",
      "export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92",
      *([args.env_setup] if args.env_setup else []),
      "",
      f"srun {train_command(args.train_flags)}",
      "",
  ]
  return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="objectax launch", description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="target", required=True)
  tpu = sub.add_parser("tpu", help="run on every worker of a Cloud TPU VM pod slice")
  tpu.add_argument("--tpu", required=True, help="TPU VM name")
  tpu.add_argument("--zone", required=True)
  tpu.add_argument("--project", default="")
  tpu.add_argument("--sync", action="store_true",
                   help="first copy this checkout to ~/objectax on every worker and install it")
  slurm = sub.add_parser("slurm", help="submit an sbatch job over multi-GPU hosts")
  slurm.add_argument("--nodes", type=int, required=True)
  slurm.add_argument("--gpus_per_node", type=int, default=8)
  slurm.add_argument("--process_per", choices=("gpu", "host"), default="gpu")
  slurm.add_argument("--cpus_per_task", type=int, default=8)
  slurm.add_argument("--time", default="24:00:00")
  slurm.add_argument("--partition", default="")
  slurm.add_argument("--job_name", default="objectax")
  slurm.add_argument("--script", default="objectax.sbatch", help="where to write the script")
  for p in (tpu, slurm):
    p.add_argument("--env_setup", default="",
                   help="shell run before training on each host, e.g. 'source ~/venv/bin/activate'")
    p.add_argument("--dry_run", action="store_true", help="print what would run; run nothing")
  return parser


def run(argv: list[str]) -> int:
  """argv: launcher flags, then `--`, then the train flags."""
  split = argv.index("--") if "--" in argv else len(argv)
  args = _parser().parse_args(argv[:split])
  args.train_flags = argv[split + 1:]
  if not any(f.startswith("--workdir") for f in args.train_flags):
    print("objectax: error: pass --workdir=... after -- (a path every host can write: a "
          "shared filesystem, or a gcsfuse mount such as /gcs/BUCKET/run)", file=sys.stderr)
    return 2
  if args.target == "tpu":
    commands = tpu_commands(args)
  else:
    script = slurm_script(args)
    commands = [["sbatch", args.script]]
    print(f"# {args.script}\n{script}")
    if not args.dry_run:
      with open(args.script, "w") as f:
        f.write(script)
  for command in commands:
    print(shlex.join(command), flush=True)
    if not args.dry_run:
      done = subprocess.run(command, check=False)
      if done.returncode:
        return done.returncode
  return 0
