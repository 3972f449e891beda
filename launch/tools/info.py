"""`objectax info`: a configured model's size, cost and memory per device, without its devices.

Everything comes from abstract evaluation (`jax.eval_shape` of the real init): the
parameter count is the model's own, and the bytes per device follow from each array's
logical axis names, the mesh's rule preset and the mesh's axis sizes, exactly as the
trainer would shard them. So a 11B encoder-decoder on a 64-chip mesh can be sized on a
laptop. No data is read (the vocabulary size comes from the config).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from objectax.data import vocab as vocab_lib
from objectax.launch import builder, config, sharding, step
from objectax.models.config import ModelConfig
from objectax.models.registry import ConfigError

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


@dataclasses.dataclass(frozen=True)
class Shard:
  """One array of the state, and the piece of it each device holds."""
  path: str
  shape: tuple[int, ...]
  dtype: Any
  logical: tuple[Any, ...]  # logical axis names (None: not named)
  spec: tuple[Any, ...]  # mesh axes per dimension (None: replicated)
  bytes_per_device: int


def shards(abstract_boxed: Any, mesh_shape: dict[str, int], rules) -> list[Shard]:
  """Every array of the tree with its mesh layout and one device's bytes (ceil-divided)."""
  specs = nn.get_partition_spec(abstract_boxed)
  mesh_specs = nn.logical_to_mesh(specs, rules)
  is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)
  leaves = jax.tree_util.tree_flatten_with_path(step.unbox(abstract_boxed))[0]
  logical = jax.tree.leaves(specs, is_leaf=is_spec)
  spec_leaves = jax.tree.leaves(mesh_specs, is_leaf=is_spec)
  out = []
  for (path, leaf), names, spec in zip(leaves, logical, spec_leaves, strict=True):
    dims = list(leaf.shape)
    spec = tuple(spec) + (None,) * (len(dims) - len(tuple(spec)))
    for i, axes in enumerate(spec[:len(dims)]):
      if axes is None:
        continue
      axes = (axes,) if isinstance(axes, str) else tuple(axes)
      dims[i] = -(-dims[i] // math.prod(mesh_shape[a] for a in axes))
    out.append(Shard(path="/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path),
                     shape=tuple(leaf.shape), dtype=leaf.dtype,
                     logical=tuple(names) + (None,) * (len(dims) - len(tuple(names))),
                     spec=spec[:len(dims)],
                     bytes_per_device=math.prod(dims) * np.dtype(leaf.dtype).itemsize))
  return out


def bytes_per_device(abstract_boxed: Any, mesh_shape: dict[str, int], rules) -> int:
  """Bytes of one device's shards of every array in the tree (ceil-divided dimensions)."""
  return sum(s.bytes_per_device for s in shards(abstract_boxed, mesh_shape, rules))


@dataclasses.dataclass(frozen=True)
class Setup:
  """The configured run, traced abstractly: what `info` and `plan` read."""
  parts: builder.Parts
  lengths: Any  # objectives.registry.TaskLengths
  mesh: dict[str, int]
  batch_per_replica: int  # examples per data-parallel shard (the `batch` rule's mesh axes)
  abstract: Any  # the TrainState's shapes, logical-axis boxes kept

  @property
  def cfg(self) -> builder.RunConfig:
    return self.parts.cfg

  @property
  def exp(self) -> config.Experiment:
    return self.parts.cfg.exp

  @property
  def arch(self):
    return self.parts.cfg.arch

  @property
  def model(self) -> ModelConfig:
    return self.parts.model_cfg

  @property
  def mesh_cfg(self) -> sharding.MeshConfig:
    return self.parts.cfg.mesh


def setup(num_devices: int | None = None) -> Setup:
  """Traces the gin-configured experiment's state for `num_devices` (default: this host's)."""
  cfg = builder.resolve()
  lengths = cfg.task_lengths()
  n = jax.device_count() if num_devices is None else num_devices
  if n < 1:
    raise ConfigError(f"--devices must be at least 1, got {n}")
  mesh_shape = dict(zip(sharding.MESH_AXES, cfg.mesh.shape(n)))
  replicas = sharding.data_parallel_size(mesh_shape, cfg.mesh)
  if cfg.train.batch_size % replicas:
    raise ConfigError(f"TrainConfig.batch_size={cfg.train.batch_size} must be divisible by the "
                      f"data-parallel size {replicas} (data x fsdp of mesh {mesh_shape})")
  # The state's shapes do not depend on the batch: trace with one example per replica.
  parts = builder.build(cfg, vocab_size=vocabulary_size(cfg.vocab),
                        extra_ids=cfg.vocab.extra_ids, feature_lengths=lengths.feature_lengths(),
                        concat=lengths.concat, batch_size=1)
  return Setup(parts=parts, lengths=lengths, mesh=mesh_shape,
               batch_per_replica=cfg.train.batch_size // replicas,
               abstract=parts.abstract_state())


def compute(num_devices: int | None = None) -> Info:
  """Figures for the gin-configured experiment on `num_devices` (default: this host's)."""
  su = setup(num_devices)
  rules = sharding.rules(su.mesh_cfg)
  return Info(experiment=su.exp.name, arch=su.exp.arch, model=su.model,
              num_params=sum(math.prod(x.shape)
                             for x in jax.tree.leaves(step.unbox(su.abstract.params))),
              flops_per_token=su.parts.flops_per_token(),
              sequence_length=su.lengths.budget, mesh=su.mesh, rules=su.mesh_cfg.rules,
              param_bytes_per_device=bytes_per_device(su.abstract.params, su.mesh, rules),
              optimizer_bytes_per_device=bytes_per_device(su.abstract.opt_state, su.mesh, rules),
              two_stacks=len(su.parts.model_lengths) > 1)


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
