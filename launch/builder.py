"""One resolver and one builder: from the parsed gin config to what every command runs.

`resolve()` instantiates the gin-bound dataclasses once and checks the names they hold
(architecture, objective, corpus) before anything is built. The result, a `RunConfig`, is
a plain frozen value that is passed down; nothing below it reads gin again.

`build()` turns a RunConfig, a vocabulary and the task's lengths into the model, its loss
and optimizer and the batch layout (`Parts`); `Parts.on_mesh(mesh)` adds the shardings,
the sharded initialiser and the jitted train and eval steps (`OnMesh`). `objectax train`,
`eval`, `inspect`, `info`, `plan` and `bench model` all go through these two functions, so
they can never disagree about which model a config means.

Free of TensorFlow and seqio (objectives and corpora are imported only when a config that
names them is resolved), so the model-only path runs on GPU hosts that lack both.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Optional

import jax
import optax
from jax.sharding import Mesh, NamedSharding

from objectax.launch import config, sharding
from objectax.launch import step as step_lib
from objectax.models import model_objectives
from objectax.models.registry import ConfigError
from objectax.models import registry as arch_registry
from objectax.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Every config object of a run, validated together before anything is built.

  `objective`, `objective_cfg`, `vocab` and `data` are None for a model-only config (`objectax
  bench model`: synthetic batches, no data, no TensorFlow).
  """
  exp: config.Experiment
  train: config.TrainConfig
  mesh: sharding.MeshConfig
  model: ModelConfig
  arch: arch_registry.Architecture
  objective: Any = None  # objectives.registry.Objective
  objective_cfg: Any = None
  vocab: Any = None  # data.vocab.VocabConfig
  data: Any = None  # data.sources.DataConfig: where the corpus's files are

  @property
  def data_dir(self) -> str:
    """The TFDS data dir (the embedded corpus and the vocabulary trained on it live there)."""
    from objectax.data import sources  # pylint: disable=g-import-not-at-top
    return sources.tfds_data_dir(self.data)

  def task_lengths(self):
    """The objective's exact lengths for the run's token budget (objectives.TaskLengths)."""
    return self.objective.lengths(self.objective_cfg, self.exp.sequence_length)


def resolve(*, model_only: bool = False, fallback_arch: bool = False) -> RunConfig:
  """Instantiates the gin-bound dataclasses and checks the names they hold.

  model_only: resolve only what the model needs (no objective, vocabulary or corpus), so
    neither TensorFlow nor seqio is imported.
  fallback_arch: when the objective cannot run on the configured architecture, use the
    first one that can (`objectax inspect bert_mlm` shows BERT's example although the
    default architecture is the causal decoder); the returned `exp.arch` names it.
  """
  exp = config.Experiment()
  arch = arch_registry.get(exp.arch)  # an unknown name fails in one line
  common = dict(train=config.TrainConfig(), mesh=sharding.MeshConfig(), model=ModelConfig())
  if model_only:
    return RunConfig(exp=exp, arch=arch, **common)
  # pylint: disable=g-import-not-at-top
  from objectax.data import sources, tasks
  from objectax.data import vocab as vocab_lib
  from objectax.objectives import registry as objective_registry
  if exp.task:  # any registered seqio task or mixture: its features say the layout
    from objectax.data import any_task  # pylint: disable=g-import-not-at-top
    objective = any_task.objective_for(exp.task)
    try:
      arch_registry.check_supports(arch, objective)
    except ConfigError as e:  # name it as the user did: a task, not an objective
      raise ConfigError(str(e).replace(f"objective {exp.task!r}", f"task {exp.task!r}", 1)
                        ) from None
    return RunConfig(exp=exp, arch=arch, objective=objective,
                     objective_cfg=any_task.settings(exp), vocab=vocab_lib.VocabConfig(),
                     data=sources.data_config(), **common)
  objective = objective_registry.get(exp.objective)
  if fallback_arch and not arch_registry.supports(arch, objective):
    runnable = arch_registry.supporting(objective)
    if runnable:
      arch = arch_registry.get(runnable[0])
      exp = dataclasses.replace(exp, arch=arch.name)
  arch_registry.check_supports(arch, objective)  # one line: the architectures it runs on
  tasks.check_pairing(sources.get_corpus(exp.corpus), objective)  # before any data is read
  return RunConfig(exp=exp, arch=arch, objective=objective,
                   objective_cfg=row_layout(objective, arch, exp.pack),
                   vocab=vocab_lib.VocabConfig(), data=sources.data_config(), **common)


def row_layout(objective: objective_registry.Objective, arch: arch_registry.Architecture,
               pack: bool) -> Any:
  """The objective's (gin-bound) config, with `pair_pieces` decided where the objective
  pairs pieces (`Objective.pairs_pieces`).

  None (the default) becomes whether the architecture pairs pieces (`pairs_pieces`) and
  the run packs; an explicit True the architecture or an unpacked run cannot take is a
  ConfigError.
  """
  objective_cfg = objective.config_cls()
  if not objective.pairs_pieces:
    return objective_cfg
  can = arch.pairs_pieces and pack
  if objective_cfg.pair_pieces is None:
    return dataclasses.replace(objective_cfg, pair_pieces=can)
  if objective_cfg.pair_pieces and not can:
    takers = [a for a in arch_registry.ARCHITECTURES.names()
              if arch_registry.get(a).pairs_pieces]
    raise ConfigError(
        f"{type(objective_cfg).__name__}.pair_pieces = True needs an architecture whose rows "
        f"take two pieces ({', '.join(takers)}) and Experiment.pack = True; got "
        f"{arch.name} with pack = {pack}")
  return objective_cfg


@dataclasses.dataclass(frozen=True)
class Parts:
  """What a run computes with, before any device is involved.

  Attributes:
    cfg: the resolved run.
    model_cfg: the ModelConfig with the vocabulary's size filled in.
    model: the module training runs (the architecture's, or a model-side objective's
      module around it: a generator, extra heads).
    loss: its loss (models.model_objectives.LossFn).
    tx: the optimizer.
    spec: the batch layout, {feature: ShapeDtypeStruct} for `batch_size` examples.
    feature_lengths: the task's feature lengths; concat: the objective's row length for
      concatenating architectures (0: inputs + targets).
  """
  cfg: RunConfig
  model_cfg: ModelConfig
  model: Any
  loss: model_objectives.LossFn
  tx: optax.GradientTransformation
  spec: dict[str, jax.ShapeDtypeStruct]
  feature_lengths: Mapping[str, int]
  concat: int = 0
  components: tuple[str, ...] = ()

  @property
  def model_lengths(self) -> dict[str, int]:
    """Tokens of each stream the model reads per example, padding included."""
    return self.cfg.arch.model_lengths(dict(self.feature_lengths), self.concat)

  @property
  def tokens_per_example(self) -> int:
    return sum(self.model_lengths.values())

  def scoring_model(self) -> Any:
    """The architecture's own model (a model-side objective's extra modules left out),
    which scores and decodes with the trunk of the trained parameters."""
    return self.cfg.arch.make_model(self.model_cfg)

  def flops_per_token(self) -> float:
    """Training FLOPs per token, including what a model-side objective adds."""
    return model_objectives.flops_per_token(self.cfg.arch, self.model_cfg, self.cfg.objective,
                                            self.cfg.objective_cfg, dict(self.feature_lengths),
                                            self.concat)

  def abstract_state(self) -> step_lib.TrainState:
    """Shapes of the whole train state, logical-axis boxes kept; no devices needed."""
    return step_lib.abstract_state(self.model, self.tx, self.spec, self.cfg.train.seed)

  def on_mesh(self, mesh: Mesh) -> "OnMesh":
    """Shardings, the sharded initialiser and the jitted steps on `mesh`."""
    mesh_cfg = self.cfg.mesh
    with sharding.activate(mesh, mesh_cfg):
      abstract, state_shardings, init = step_lib.abstract_and_init(
          self.model, self.tx, self.spec, mesh, mesh_cfg, self.cfg.train.seed)
    return OnMesh(parts=self, mesh=mesh, abstract=abstract, state_shardings=state_shardings,
                  batch_sharding=sharding.batch_sharding(mesh, mesh_cfg), _init=init)


@dataclasses.dataclass(frozen=True)
class OnMesh:
  """A run's parts laid out on a device mesh.

  Attributes:
    abstract: the train state's ShapeDtypeStructs, each with its sharding (restore target).
    state_shardings: the train state's NamedShardings.
    batch_sharding: how a global batch is split (the `batch` logical axis's rule).
  """
  parts: Parts
  mesh: Mesh
  abstract: Any
  state_shardings: Any
  batch_sharding: NamedSharding
  _init: Callable[[], Any]

  def activate(self):
    """The mesh and its logical-axis rules in context (for tracing and running steps)."""
    return sharding.activate(self.mesh, self.parts.cfg.mesh)

  def init(self) -> step_lib.TrainState:
    """A fresh train state, created directly in its sharded layout."""
    with self.activate():
      return self._init()

  @property
  def batch_shardings(self) -> dict[str, NamedSharding]:
    return {k: self.batch_sharding for k in self.parts.spec}

  def put(self, batch: Mapping[str, Any]) -> dict[str, jax.Array]:
    """A host batch (numpy, the whole global batch) onto the mesh."""
    return {k: jax.device_put(v, self.batch_sharding) for k, v in batch.items()}

  @functools.cached_property
  def train_step(self) -> Callable:
    """jit((state, batch, rng) -> (state, metrics)), the state donated."""
    p = self.parts
    with self.activate():
      return jax.jit(step_lib.make_train_step(p.model, p.loss, p.tx, p.cfg.train,
                                              p.components, p.cfg.arch.weights_key),
                     in_shardings=(self.state_shardings, self.batch_shardings, None),
                     out_shardings=(self.state_shardings, None), donate_argnums=(0,))

  @functools.cached_property
  def eval_step(self) -> Callable:
    """jit((params, batch) -> (loss sum, weight sum))."""
    p = self.parts
    with self.activate():
      return jax.jit(step_lib.make_eval_step(p.model, p.loss, p.components),
                     in_shardings=(self.state_shardings.params, self.batch_shardings))


def build(cfg: RunConfig, *, vocab_size: int, extra_ids: int, feature_lengths: Mapping[str, int],
          concat: int = 0, batch_size: Optional[int] = None,
          components: tuple[str, ...] = ()) -> Parts:
  """The model, loss, optimizer and batch layout of `cfg` for a vocabulary and task lengths.

  vocab_size / extra_ids: the vocabulary's ids and sentinels (the model's table is padded
    from vocab_size as ModelConfig says).
  feature_lengths, concat: the task's lengths (TaskLengths.feature_lengths() and .concat).
  batch_size: examples in the batch layout (default TrainConfig.batch_size).
  components: names of the mixture components whose loss, tokens and examples are
    logged apart (the batch then holds their ids: model_objectives.COMPONENT_KEY).
  """
  model_cfg = cfg.model.with_vocab_size(vocab_size)
  model, loss = model_objectives.build(cfg.arch, model_cfg, cfg.objective, cfg.objective_cfg,
                                       model_objectives.Vocab(vocab_size, extra_ids),
                                       len(components))
  batch_size = cfg.train.batch_size if batch_size is None else batch_size
  spec = cfg.arch.batch_spec(dict(feature_lengths), batch_size, pack=cfg.exp.pack,
                             concat_length=concat)
  if components:
    per_target = spec[cfg.arch.targets_key]
    spec = {**spec, **{k: jax.ShapeDtypeStruct(per_target.shape, per_target.dtype) for k in
                       (model_objectives.COMPONENT_KEY, model_objectives.COMPONENT_START_KEY)}}
  return Parts(cfg=cfg, model_cfg=model_cfg, model=model, loss=loss,
               tx=step_lib.make_optimizer(cfg.train), spec=spec,
               feature_lengths=dict(feature_lengths), concat=concat,
               components=tuple(components))


def build_for(cfg: RunConfig, ti: Any) -> Parts:
  """`build` for the data a run trains on (an `input_pipeline.TaskInput`): its vocabulary,
  task lengths and mixture components."""
  return build(cfg, vocab_size=ti.vocabulary.vocab_size, extra_ids=ti.vocabulary.extra_ids,
               feature_lengths=ti.task_feature_lengths, concat=ti.lengths.concat,
               components=ti.component_names)
