"""Runs several trainings in one process (for tests that need simulated devices).

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python mesh_runs.py runs.json

runs.json: a list of {"workdir", "gin_files", "bindings", "drop_checkpoint" (optional step
whose checkpoint and iterator state are deleted after the run, to simulate a crash),
"keep_metrics" (optional path: metrics.jsonl is copied there after the run, before a later
resume rewrites it)}.
Each run is `objectax train` with those flags; the metrics land in its workdir. One process
for all runs pays the imports once.
"""
import json
import shutil
import sys

from objectax.launch import configure, train


def main(path: str) -> None:
  with open(path) as f:
    runs = json.load(f)
  for run in runs:
    configure.parse(run["gin_files"], run["bindings"])
    summary = train.train(run["workdir"], quiet=True)
    print(json.dumps({"workdir": run["workdir"], "start_step": summary["start_step"],
                      "final_step": summary["final_step"]}), flush=True)
    if run.get("keep_metrics"):
      shutil.copy(f"{run['workdir']}/metrics.jsonl", run["keep_metrics"])
    step = run.get("drop_checkpoint")
    if step is not None:
      shutil.rmtree(f"{run['workdir']}/checkpoints/{step}")
      shutil.rmtree(f"{run['workdir']}/data_iterators/{step}", ignore_errors=True)


if __name__ == "__main__":
  main(sys.argv[1])
