"""`objectax info`: a configured model's size, cost and memory per device, without its devices.

Everything comes from abstract evaluation (`jax.eval_shape` of the real init): the
parameter count is the model's own, and the bytes per device follow from each array's
logical axis names, the mesh's rule preset and the mesh's axis sizes, exactly as the
trainer would shard them. So a 11B encoder-decoder on a 64-chip mesh can be sized on a
laptop. Imports no TensorFlow or seqio (the vocabulary size comes from the config).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from objectax.data import vocab as vocab_lib
from objectax.data.registry import ConfigError
from objectax.launch import config, sharding, step
from objectax.models import model_objectives
from objectax.models import registry as arch_registry
from objectax.models.config import ModelConfig
from objectax.objectives import registry as objective_registry

BYTE_VOCAB_BASE = 256 + 3  # bytes plus PAD / EOS / UNK (seqio.ByteVocabulary)


@dataclasses.dataclass(frozen=True)
class Info:
  """The figures `objectax info` prints."""
  experiment: str
  arch: str
  model: ModelConfig
  num_params: int
  flops_per_token: float
  sequence_length: int
  mesh: dict[str, int]
  rules: str
  param_bytes_per_device: int
  optimizer_bytes_per_device: int
  two_stacks: bool = False  # an encoder and a decoder stream (from model_lengths)

  @property
  def total_bytes_per_device(self) -> int:
    return self.param_bytes_per_device + self.optimizer_bytes_per_device


def vocabulary_size(vocab_cfg: vocab_lib.VocabConfig) -> int:
  """Ids of the configured vocabulary, known without building it where possible."""
  if vocab_cfg.kind == "byte":
    return BYTE_VOCAB_BASE + vocab_cfg.extra_ids
  if not vocab_cfg.sentencepiece_model:  # trained here: exactly vocab_size pieces
    return vocab_cfg.vocab_size + vocab_cfg.extra_ids
  return vocab_lib.get_vocabulary(vocab_cfg).vocab_size  # a user's model: read its size


def bytes_per_device(abstract_boxed: Any, mesh_shape: dict[str, int], rules) -> int:
  """Bytes of one device's shards of every array in the tree (ceil-divided dimensions)."""
  specs = nn.get_partition_spec(abstract_boxed)
  mesh_specs = nn.logical_to_mesh(specs, rules)
  leaves = jax.tree.leaves(step.unbox(abstract_boxed))
  spec_leaves = jax.tree.leaves(mesh_specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  total = 0
  for leaf, spec in zip(leaves, spec_leaves, strict=True):
    dims = list(leaf.shape)
    for i, axes in enumerate(tuple(spec)[:len(dims)]):
      if axes is None:
        continue
      axes = (axes,) if isinstance(axes, str) else tuple(axes)
      dims[i] = -(-dims[i] // math.prod(mesh_shape[a] for a in axes))
    total += math.prod(dims) * np.dtype(leaf.dtype).itemsize
  return total


def compute(num_devices: int | None = None) -> Info:
  """Figures for the gin-configured experiment on `num_devices` (default: this host's)."""
  exp = config.Experiment()
  arch = arch_registry.get(exp.arch)
  objective = objective_registry.get(exp.objective)
  objective_registry.check_architecture(objective, exp.arch)
  tc, mesh_cfg = config.TrainConfig(), sharding.MeshConfig()
  vocab_cfg = vocab_lib.VocabConfig()
  model_cfg = ModelConfig().with_vocab_size(vocabulary_size(vocab_cfg))
  lengths = objective.lengths(objective.config_cls(), exp.sequence_length)
  n = jax.device_count() if num_devices is None else num_devices
  if n < 1:
    raise ConfigError(f"--devices must be at least 1, got {n}")
  mesh_shape = dict(zip(sharding.MESH_AXES, mesh_cfg.shape(n)))
  per_replica = max(1, tc.batch_size // (mesh_shape["data"] * mesh_shape["fsdp"]))
  # The state's shapes do not depend on the batch: trace with one example per replica.
  spec = arch.batch_spec(lengths.feature_lengths(), per_replica, pack=exp.pack,
                         concat_length=lengths.concat)
  model, _ = model_objectives.build(arch, model_cfg, objective, objective.config_cls(),
                                    model_objectives.Vocab(vocabulary_size(vocab_cfg),
                                                           vocab_cfg.extra_ids))
  abstract = step.abstract_state(model, step.make_optimizer(tc), spec)
  rules = sharding.rules(mesh_cfg)
  params_bytes = bytes_per_device(abstract.params, mesh_shape, rules)
  opt_bytes = bytes_per_device(abstract.opt_state, mesh_shape, rules)
  num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(step.unbox(abstract.params)))
  return Info(experiment=exp.name, arch=exp.arch, model=model_cfg, num_params=num_params,
              flops_per_token=arch.flops_per_token(model_cfg, lengths.feature_lengths(), lengths.concat),
              sequence_length=lengths.budget, mesh=mesh_shape, rules=mesh_cfg.rules,
              param_bytes_per_device=params_bytes, optimizer_bytes_per_device=opt_bytes,
              two_stacks=len(arch.model_lengths(lengths.feature_lengths(), lengths.concat)) > 1)


def _gb(n: int) -> str:
  return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def render(info: Info) -> str:
  m = info.model
  devices = math.prod(info.mesh.values())
  layers = (f"{m.encoder_layers} + {m.num_layers} layers" if info.two_stacks
            else f"{m.num_layers} layers")
  options = f"{m.position_embedding} positions, {'gated ' if m.mlp_gated else ''}{m.mlp_activation} MLP"
  return "\n".join([
      f"experiment {info.experiment} ({info.arch})",
      f"  model: d_model {m.d_model}, {layers}, {m.num_heads} heads x {m.head_dim}, mlp "
      f"{m.mlp_dim}, vocab {m.vocab_size}, {options}, {m.param_dtype} parameters",
      f"  parameters: {info.num_params:,} ({info.num_params / 1e9:.3f}B)",
      f"  training FLOPs per token: {info.flops_per_token:.4g} at {info.sequence_length} "
      "tokens per example (6N + attention, PaLM App. B)",
      f"  mesh {info.mesh} ({devices} devices), rules {info.rules!r}; per device: parameters "
      f"{_gb(info.param_bytes_per_device)}, optimizer state "
      f"{_gb(info.optimizer_bytes_per_device)}, total {_gb(info.total_bytes_per_device)}",
  ])
