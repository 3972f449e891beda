"""The pure, jitted pieces of training: state, optimizer, train and eval steps, sharded init.

Free of TensorFlow and seqio, so GPU hosts that carry only jax/flax/optax/gin can build,
initialise and benchmark the exact step the trainer runs, on synthetic batches
(`Architecture.batch_spec` / `synthetic_batch`).

`train_step(state, batch, rng) -> (state, metrics)` never looks at the objective's name:
the objective shaped the batch (which tokens exist, which carry loss weight), and
`models/model_objectives.py` gives the loss: the same weighted cross-entropy for every
data-only objective, an objective's own loss (auxiliary heads, a generator) otherwise.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from objectax.launch import config, sharding
from objectax.models import layers, model_objectives


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def learning_rate_schedule(tc: config.TrainConfig) -> optax.Schedule:
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=tc.learning_rate, warmup_steps=min(tc.warmup_steps, tc.steps - 1),
      decay_steps=tc.steps, end_value=tc.learning_rate * tc.end_lr_fraction)


def decay_matrices_only(params: Any) -> Any:
  """True for matrices (weight decay), False for vectors such as norm scales.

  A scanned stack (ModelConfig.scan_layers) stacks its blocks' parameters on a leading
  layers axis, which does not count: its norm scales stay undecayed, as in the plain path.
  """
  def is_matrix(path, p):
    scanned = any(str(getattr(k, "key", "")).startswith(layers.SCAN_PREFIX) for k in path)
    return p.ndim - scanned >= 2
  return jax.tree_util.tree_map_with_path(is_matrix, params)


def make_optimizer(tc: config.TrainConfig) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(tc.clip_grad_norm),
      optax.adamw(learning_rate_schedule(tc), b1=tc.adam_b1, b2=tc.adam_b2,
                  weight_decay=tc.weight_decay, mask=decay_matrices_only),
  )


# The streams a model reads, each fed by `<stream>_input_tokens`: encoder-only models read
# "encoder", decoder-only ones "decoder", encoder-decoders both.
STREAMS = ("encoder", "decoder")


def token_counts(batch: Mapping[str, Any]) -> dict[str, tuple[Any, int]]:
  """{stream: (real tokens, positions)} of every stream in `batch` (STREAMS).

  The positions are what the model computes on, and what MFU counts as work; the real
  tokens are those that are not padding, decided as the models' own padding masks do
  (models/decoder.py, encdec.py, encoder.py). Packed, padding is where
  `<stream>_segment_ids` is 0. Unpacked, the decoder's padding is where
  `decoder_target_tokens` is 0: its inputs begin with the BOS id 0, and the row's EOS is
  shifted into the first padding slot, so the inputs cannot tell. The encoder's padding is
  where `encoder_input_tokens` is 0 (no real input id is 0; encoder_only's targets are 0
  wherever there is no loss, so they cannot tell either). Other keys (mixture tags,
  decoder_causal_attention) do not change what is read.

  Plain array methods only, so it counts numpy host batches and traced jax arrays alike
  (inside the jitted train step, over the global batch); real counts are array scalars,
  positions Python ints.
  """
  counts = {}
  for stream in STREAMS:
    tokens_BL = batch.get(f"{stream}_input_tokens")
    if tokens_BL is None:
      continue
    total = int(tokens_BL.size)
    segment_ids_BL = batch.get(f"{stream}_segment_ids")
    if segment_ids_BL is not None:
      real = (segment_ids_BL != 0).sum()
    elif stream == "decoder":
      # No targets (a decoding batch): the models then treat every position as real.
      targets_BL = batch.get("decoder_target_tokens")
      real = total if targets_BL is None else (targets_BL != 0).sum()
    else:
      real = (tokens_BL != 0).sum()
    counts[stream] = (real, total)
  return counts


def padding_fraction(batch: Mapping[str, Any]) -> Any:
  """1 - real tokens / positions over all of `batch`'s streams (`token_counts`): the share
  of the computed positions that is padding, which MFU counts as work all the same."""
  counts = token_counts(batch).values()
  if not counts:
    raise ValueError(f"no token stream in the batch (keys: {', '.join(sorted(batch))}); "
                     f"expected <stream>_input_tokens for a stream of {', '.join(STREAMS)}")
  total = sum(total for _, total in counts)
  return (total - sum(real for real, _ in counts)) / total  # exactly 0 for a full batch


def component_metrics(batch: dict, metrics: dict, names: tuple[str, ...],
                      weights_key: str) -> dict:
  """`metrics` with each mixture component's "loss/<name>" (when the loss gave its sums),
  "tokens/<name>" (target tokens with loss weight) and "examples/<name>" in this batch."""
  metrics = dict(metrics)
  ids_BL = batch[model_objectives.COMPONENT_KEY]
  member_BLK = jax.nn.one_hot(ids_BL - 1, len(names), dtype=jnp.float32)
  tokens_K = jnp.einsum("BL,BLK->K", (batch[weights_key] > 0).astype(jnp.float32), member_BLK)
  examples_K = jnp.einsum("BL,BLK->K",
                          batch[model_objectives.COMPONENT_START_KEY].astype(jnp.float32),
                          member_BLK)
  loss_K = metrics.pop(model_objectives.COMPONENT_LOSS_SUMS, None)
  weight_K = metrics.pop(model_objectives.COMPONENT_WEIGHT_SUMS, None)
  for k, name in enumerate(names):
    if loss_K is not None:
      metrics[f"loss/{name}"] = loss_K[k] / jnp.maximum(weight_K[k], 1.0)
    metrics[f"tokens/{name}"] = tokens_K[k]
    metrics[f"examples/{name}"] = examples_K[k]
  return metrics


def make_train_step(model: nn.Module, loss: model_objectives.LossFn,
                    tx: optax.GradientTransformation, tc: config.TrainConfig,
                    components: tuple[str, ...] = (), weights_key: str = ""):
  """(state, batch, rng) -> (state, metrics): one optimizer step on `loss`'s objective.

  `model` and `loss` come from `model_objectives.build`: the architecture's model and the
  weighted cross-entropy for data-only objectives, an objective's own module and loss
  for model-side ones (ELECTRA, SpacTor, multi-token prediction). Nothing here knows which.
  With mixture `components`, the metrics also hold each one's (`component_metrics`).
  The metrics always hold "padding_fraction" of the step's batch (`padding_fraction`), so
  the training log can count MFU on real tokens only.
  """
  schedule = learning_rate_schedule(tc)

  def train_step(state: TrainState, batch: dict, rng: jax.Array):
    rng = jax.random.fold_in(rng, state.step)

    def loss_fn(params):
      return loss(model, params, batch, rng=rng, step=state.step, evaluate=False,
                  z_loss=tc.z_loss)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    if components:
      metrics = component_metrics(batch, metrics, components, weights_key)
    return new_state, {**metrics, "grad_norm": optax.tree.norm(grads),
                       "learning_rate": schedule(state.step),
                       "padding_fraction": padding_fraction(batch)}

  return train_step


def make_eval_step(model: nn.Module, loss: model_objectives.LossFn,
                   components: tuple[str, ...] = ()):
  """(params, batch) -> (headline loss sum, its weight): summed over batches, then divided.
  With mixture `components` whose loss the objective splits, also each one's loss and
  weight sums, float32[components] each."""
  def eval_step(params, batch):
    _, metrics = loss(model, params, batch, rng=jax.random.key(0),
                      step=jnp.zeros((), jnp.int32), evaluate=True, z_loss=0.0)
    sums = (metrics["loss"] * metrics["target_tokens"], metrics["target_tokens"])
    if components and model_objectives.COMPONENT_LOSS_SUMS in metrics:
      sums += (metrics[model_objectives.COMPONENT_LOSS_SUMS],
               metrics[model_objectives.COMPONENT_WEIGHT_SUMS])
    return sums
  return eval_step


def eval_losses(sums: list, components: tuple[str, ...] = ()) -> tuple[float, dict[str, float]]:
  """The mean loss of `eval_step` outputs summed over batches, and each component's (those
  with weight) when the step gave their sums."""
  total = lambda i: sum(np.asarray(s[i]) for s in sums)
  per_component = {}
  if sums and len(sums[0]) == 4:
    per_component = {n: float(l / max(w, 1.0)) for n, l, w in
                     zip(components, total(2), total(3)) if w > 0}
  return float(total(0) / max(float(total(1)), 1.0)), per_component


def unbox(tree: Any) -> Any:
  """Drops the logical-axis boxes (their names already went into the shardings)."""
  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
  return jax.tree.map(lambda x: x.unbox(apply_constraint=False) if is_box(x) else x, tree,
                      is_leaf=is_box)


def _init_fn(model, tx, spec):
  def init_fn(rng):
    dummy = {k: jnp.zeros(s.shape, s.dtype) for k, s in spec.items()}
    params = model.init({"params": rng, "dropout": rng}, dummy, deterministic=True)["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  return init_fn


def abstract_state(model, tx, spec, seed: int = 0) -> TrainState:
  """Shapes and dtypes of the whole train state, logical axis boxes kept; no device work."""
  return jax.eval_shape(_init_fn(model, tx, spec), jax.random.key(seed))


def abstract_and_init(model, tx, spec, mesh, mesh_cfg, seed):
  """Builds the state directly in its sharded layout (no host round-trip of parameters)."""
  init_fn = _init_fn(model, tx, spec)
  rng = jax.random.key(seed)
  abstract_boxed = jax.eval_shape(init_fn, rng)
  state_shardings = sharding.logical_shardings(abstract_boxed, mesh, mesh_cfg)
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      unbox(abstract_boxed), state_shardings)
  init = jax.jit(lambda r: unbox(init_fn(r)), out_shardings=state_shardings)
  return abstract, state_shardings, lambda: init(rng)
