"""Device meshes and logical-axis rules: the one place that maps model axes onto devices.

Parameters carry logical axis names from the closed list in `models.layers.LOGICAL_AXES`
(attached at creation with `nn.with_logical_partitioning`). A *rule preset* maps those names
onto mesh axes; the mesh itself is config data, e.g. ``(("data", -1), ("fsdp", 1), ("tensor", 1))``
with one ``-1`` filled in from the device count. A one-device mesh is still a mesh: every
array in a run has an explicit sharding from the first step.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Mapping, Sequence

import gin
import jax
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from objectax.models.registry import ConfigError, Registry
from objectax.models.layers import LOGICAL_AXES

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axes. "batch" always spans the data-parallel axes (data and fsdp);
# FSDP shards the embed dimension of the parameters (ZeRO-3 style), tensor parallelism the
# heads / mlp / vocab dimensions (Megatron style). Unlisted names stay replicated.
RULE_PRESETS: Registry[tuple[tuple[str, Any], ...]] = Registry("sharding rule preset")
RULE_PRESETS.add("data_parallel", (("batch", ("data", "fsdp")),))
RULE_PRESETS.add("fsdp", (("batch", ("data", "fsdp")), ("embed", "fsdp")))
RULE_PRESETS.add("fsdp_tensor", (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
))


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """The device mesh: axis sizes in MESH_AXES order (one may be -1) and a rule preset.

  Attributes:
    axes: ((mesh axis, size), ...) in MESH_AXES order; one size may be -1 (the rest of
      the devices).
    rules: a RULE_PRESETS name.
    rule_overrides: ((logical axis, mesh axes or None), ...) replacing or adding entries
      of the preset, e.g. (("vocab", "fsdp"),) to shard the vocabulary over fsdp too;
      mesh axes may be one name or a tuple of names.
  """
  axes: tuple[tuple[str, int], ...] = (("data", -1), ("fsdp", 1), ("tensor", 1))
  rules: str = "data_parallel"
  rule_overrides: tuple[tuple[str, Any], ...] = ()

  def __post_init__(self):
    object.__setattr__(self, "axes", tuple((str(n), int(s)) for n, s in self.axes))
    names = [n for n, _ in self.axes]
    if tuple(names) != MESH_AXES:
      raise ConfigError(
          f"MeshConfig.axes names {names} must be exactly {list(MESH_AXES)} in that order")
    if sum(s == -1 for _, s in self.axes) > 1 or any(s == 0 or s < -1 for _, s in self.axes):
      raise ConfigError(
          f"MeshConfig.axes {list(self.axes)}: sizes must be positive, with at most one -1")
    RULE_PRESETS.get(self.rules)
    for entry in self.rule_overrides:
      if not isinstance(entry, (tuple, list)) or len(entry) != 2:
        raise ConfigError(f"MeshConfig.rule_overrides entry {entry!r} must be a pair "
                          "(logical axis, mesh axes)")
      logical, mesh_axes = entry
      if logical not in LOGICAL_AXES:
        raise ConfigError(f"MeshConfig.rule_overrides names unknown logical axis {logical!r}; "
                          f"valid choices: {', '.join(LOGICAL_AXES)}")
      names = () if mesh_axes is None else (
          (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes))
      unknown = [a for a in names if a not in MESH_AXES]
      if unknown:
        raise ConfigError(f"MeshConfig.rule_overrides maps {logical!r} to unknown mesh axis "
                          f"{unknown[0]!r}; valid choices: {', '.join(MESH_AXES)}")

  def shape(self, num_devices: int) -> tuple[int, ...]:
    """Axis sizes with the -1 filled in; a mesh that doesn't divide the devices fails here."""
    sizes = [s for _, s in self.axes]
    fixed = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
      if num_devices % fixed:
        raise ConfigError(
            f"mesh {dict(self.axes)} does not divide {num_devices} devices: the fixed axes "
            f"multiply to {fixed}; choose sizes whose product divides {num_devices}")
      sizes[sizes.index(-1)] = num_devices // fixed
    elif fixed != num_devices:
      raise ConfigError(
          f"mesh {dict(self.axes)} has {fixed} devices but {num_devices} are available; "
          f"use -1 for one axis or sizes multiplying to {num_devices}")
    return tuple(sizes)


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = list(jax.devices() if devices is None else devices)
  shape = cfg.shape(len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def rules(cfg: MeshConfig) -> tuple[tuple[str, Any], ...]:
  """The preset's (logical axis, mesh axes) pairs with the overrides applied."""
  table = dict(RULE_PRESETS.get(cfg.rules))
  for logical, mesh_axes in cfg.rule_overrides:
    table[logical] = tuple(mesh_axes) if isinstance(mesh_axes, list) else mesh_axes
  return tuple(table.items())


def batch_axes(cfg: MeshConfig) -> tuple[str, ...]:
  """The mesh axes the `batch` logical axis maps to under cfg's rules."""
  axes = dict(rules(cfg)).get("batch")
  return () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))


def data_parallel_size(mesh_shape: Mapping[str, int], cfg: MeshConfig) -> int:
  """Ways a global batch is split: the product of the sizes (a Mesh's `shape`, or axis ->
  size of a mesh not built) of the mesh axes of the `batch` rule."""
  return math.prod(mesh_shape[a] for a in batch_axes(cfg))


def batch_sharding(mesh: Mesh, cfg: MeshConfig) -> NamedSharding:
  """Batches are split over their leading (example) axis as the `batch` rule says
  (every preset: data and fsdp)."""
  return NamedSharding(mesh, P(batch_axes(cfg) or None))


def logical_shardings(abstract_tree: Any, mesh: Mesh, cfg: MeshConfig) -> Any:
  """NamedShardings for a tree of (possibly logically boxed) abstract arrays."""
  specs = nn.get_partition_spec(abstract_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules(cfg))


def check_batch_size(global_batch_size: int, mesh: Mesh, cfg: MeshConfig) -> None:
  dp = data_parallel_size(mesh.shape, cfg)
  if global_batch_size % dp or global_batch_size % jax.process_count():
    raise ConfigError(
        f"TrainConfig.batch_size={global_batch_size} must be divisible by the data-parallel "
        f"size {dp} ({' x '.join(batch_axes(cfg))}) and the process count {jax.process_count()}")


@contextlib.contextmanager
def activate(mesh: Mesh, cfg: MeshConfig):
  """Mesh + logical-axis rules in context, for tracing code with logical constraints."""
  set_mesh = getattr(jax, "set_mesh", None) or getattr(jax.sharding, "use_mesh")
  with nn.logical_axis_rules(rules(cfg)), set_mesh(mesh):
    yield
