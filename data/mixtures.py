"""SeqIO mixture registration: the only place that calls `seqio.MixtureRegistry.add`.

A mixture objective (UL2's mixture of denoisers) becomes one seqio Task per component,
registered by data/tasks.py as ``{corpus}_{objective}_{component}``, and one Mixture over
them named ``{corpus}_{objective}``, sampled with the components' rates
(`tf.data.Dataset.sample_from_datasets`, seeded by the run's seed).
"""
from __future__ import annotations

from typing import Sequence

import seqio


def register_mixture(name: str, tasks_and_rates: Sequence[tuple[seqio.Task, float]]) -> seqio.Mixture:
  """Registers (or re-registers) the mixture `name` over these tasks and returns it."""
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  return seqio.MixtureRegistry.add(name, [(task.name, float(rate)) for task, rate in tasks_and_rates])
