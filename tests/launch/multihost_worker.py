"""One process of a multi-process (or the single-process reference) training run.

    python multihost_worker.py OUT_DIR WORKDIR [gin bindings...]

Trains with the bindings (a DistributedConfig binding makes it join a multi-process run),
then writes OUT_DIR/batches_<process index>.npz: the first 3 host-local training batches
this process feeds (decoder target tokens), for the disjointness check.
"""
import os
import sys

import numpy as np

from objectax.launch import builder, configure, input_pipeline, train


def main(out_dir: str, workdir: str, bindings: list[str]) -> None:
  configure.parse(["run/quickstart.gin"], bindings)
  train.train(workdir, quiet=True)
  import jax  # pylint: disable=g-import-not-at-top
  cfg = builder.resolve()
  ti = input_pipeline.build_task_input(cfg)
  stream = input_pipeline.TrainStream(ti, cfg.train.batch_size, cfg.train.seed,
                                      input_shards=cfg.train.input_shards)
  batches = [next(stream)["decoder_target_tokens"] for _ in range(3)]
  np.savez(os.path.join(out_dir, f"batches_{jax.process_index()}.npz"), *batches)
  print(f"process {jax.process_index()} of {jax.process_count()}: "
        f"{jax.local_device_count()} local devices", flush=True)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], sys.argv[3:])
