"""Shared helpers for the model tests: parameter boxes, leakage checks, training, imports.

Imported as `model_testing` (pytest puts this folder on sys.path, as for
tests/objectives/objective_testing.py). Holds no tests: the name does not match test_*.py.
"""
import subprocess
import sys
from typing import Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from objectax.models import config as config_lib
from objectax.models.config import ModelConfig
from objectax.models.layers import LOGICAL_AXES
from objectax.models.losses import weighted_cross_entropy

Z_LOSS = 1e-4  # the z-loss coefficient every model test trains with


def tiny_config(width: int = 32, **overrides) -> ModelConfig:
  """A test-sized config: 2 layers, 2 heads of width / 2, MLP 2 * width, vocabulary 100
  (padded to 128); `overrides` replace any field, the shapes included."""
  shapes = dict(d_model=width, num_heads=2, head_dim=width // 2, mlp_dim=2 * width, num_layers=2)
  return ModelConfig(**{**shapes, **overrides}).with_vocab_size(100)


def unbox_checked(boxed):
  """Unboxed params, after asserting every leaf is boxed with one known logical axis per dim."""
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
  specs = jax.tree.leaves(nn.get_partition_spec(boxed),
                          is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  assert len(specs) == len(leaves)
  for leaf, spec in zip(leaves, specs):
    assert len(spec) == leaf.value.ndim, spec
    assert all(name in LOGICAL_AXES for name in spec), spec
  return nn.unbox(boxed)


def assert_num_params(params, cfg: ModelConfig, num_params_fn=config_lib.num_params) -> None:
  """Asserts unboxed `params` hold num_params_fn(cfg) numbers, and a "head" iff untied."""
  assert sum(x.size for x in jax.tree.leaves(params)) == num_params_fn(cfg)
  assert ("head" in params) != cfg.tie_embeddings


def segment_positions(segment_ids) -> np.ndarray:
  """Positions that restart at 0 in every segment of every row: [[1, 1, 2, 0]] -> [[0, 1, 0, 0]]."""
  segment_ids = np.asarray(segment_ids, np.int32)
  positions = np.zeros_like(segment_ids)
  for b in range(segment_ids.shape[0]):
    for s in np.unique(segment_ids[b]):
      where = segment_ids[b] == s
      positions[b, where] = np.arange(where.sum())
  return positions


def unpacked_logits_checked(model, params, batch, real, stream: str) -> np.ndarray:
  """Logits of the unpacked `batch`, after asserting them finite and, on the `real` tokens,
  equal to those of the same batch packed one segment per row (the model infers segments
  and positions when `{stream}_segment_ids` / `{stream}_positions` are absent)."""
  logits = np.asarray(model.apply({"params": params}, batch))
  assert np.isfinite(logits).all()
  packed = dict(batch, **{
      f"{stream}_segment_ids": real.astype(np.int32),
      f"{stream}_positions": np.where(real, np.arange(real.shape[1]), 0).astype(np.int32)})
  np.testing.assert_allclose(np.asarray(model.apply({"params": params}, packed))[real],
                             logits[real], atol=1e-5)
  return logits


def assert_flow_matches(influence, allowed, name: str = "") -> None:
  """Asserts gradient influence is exactly zero where `allowed` is False and > 0 where True."""
  assert np.all(influence[~allowed] == 0.0), f"{name}: gradient flows where forbidden"
  assert np.all(influence[allowed] > 0.0), f"{name}: no gradient where allowed"


def assert_dropout_only_in_training(module) -> None:
  """On `module`.Model (1 layer, dropout 0.5, bfloat16) and a 2 x 8 synthetic batch: asserts
  float32 logits, evaluation (the default and deterministic=True) repeatable and equal, and
  dropout (deterministic=False) changing the logits while keeping them finite."""
  model = module.Model(tiny_config(num_layers=1, dropout_rate=0.5, dtype="bfloat16"))
  spec = module.batch_spec({"targets": 8}, 2)
  batch = module.synthetic_batch(spec, 100, 0)
  params = module.init_params(model, spec, jax.random.key(0))
  evaluated = model.apply({"params": params}, batch)
  train = model.apply({"params": params}, batch, deterministic=False,
                      rngs={"dropout": jax.random.key(1)})
  assert evaluated.dtype == jnp.float32 and np.isfinite(np.asarray(train)).all()
  np.testing.assert_array_equal(evaluated, model.apply({"params": params}, batch))
  np.testing.assert_array_equal(evaluated, model.apply({"params": params}, batch,
                                                       deterministic=True))
  assert not np.allclose(evaluated, train)


def adam_losses(model, params, batches: Iterable[dict], targets_key: str, weights_key: str,
                learning_rate: float) -> list[float]:
  """Per-step training losses ((CE + z-loss) / weight) of Adam over `batches`, one step each."""
  opt = optax.adam(learning_rate)

  def loss_fn(p, batch):
    loss, z_loss, weight = weighted_cross_entropy(
        model.apply({"params": p}, batch), batch[targets_key], batch[weights_key], Z_LOSS)
    return (loss + z_loss) / weight

  @jax.jit
  def step(p, s, batch):
    loss, g = jax.value_and_grad(loss_fn)(p, batch)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s, loss

  state, losses = opt.init(params), []
  for batch in batches:
    params, state, loss = step(params, state, batch)
    losses.append(float(loss))
  return losses


def assert_fits_one_batch(model, params, batch, targets_key: str, weights_key: str,
                          steps: int) -> None:
  """Asserts `steps` Adam steps (lr 3e-3) on one fixed batch at least halve its training loss."""
  losses = adam_losses(model, params, [batch] * steps, targets_key, weights_key, 3e-3)
  assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


def copy_batches(steps: int, batch_size: int, n: int, num_symbols: int,
                 seed: int = 0) -> Iterable[dict]:
  """`steps` encoder-decoder batches with targets = inputs: fresh random tokens in
  [2, 2 + num_symbols), then EOS."""
  rng = np.random.default_rng(seed)
  for _ in range(steps):
    tokens = rng.integers(2, 2 + num_symbols, (batch_size, n)).astype(np.int32)
    tokens[:, -1] = 1  # EOS
    yield {"encoder_input_tokens": tokens, "decoder_target_tokens": tokens,
           "decoder_input_tokens": np.pad(tokens[:, :-1], ((0, 0), (1, 0))),
           "decoder_loss_weights": np.ones_like(tokens)}


def assert_learns_to_copy(model, params, num_symbols: int = 8, n: int = 6,
                          batch_size: int = 32) -> None:
  """Asserts 100 Adam steps (lr 1e-2) on copy batches end below half the no-inputs optimum.

  Without reading the inputs the best loss is log(num_symbols) on the n - 1 random tokens.
  """
  losses = adam_losses(model, params, copy_batches(100, batch_size, n, num_symbols),
                       "decoder_target_tokens", "decoder_loss_weights", 1e-2)
  chance = np.log(num_symbols) * (n - 1) / n
  assert np.mean(losses[-10:]) < 0.5 * chance, (losses[0], losses[-10:])


_BLOCK_TF_AND_SEQIO = """
import sys
class _Blocker:
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in ("tensorflow", "seqio"):
      raise ImportError("blocked: " + name)
sys.meta_path.insert(0, _Blocker())
"""

_CHECK_NOT_IMPORTED = """
bad = [m for m in ("tensorflow", "seqio") if m in sys.modules]
assert not bad, bad
"""


def assert_runs_without_tensorflow_or_seqio(code: str) -> None:
  """Runs `code` in a fresh Python whose imports of tensorflow/seqio fail; asserts it succeeds
  and that neither module ended up in sys.modules."""
  program = _BLOCK_TF_AND_SEQIO + code + _CHECK_NOT_IMPORTED
  subprocess.run([sys.executable, "-c", program], check=True, cwd="/", timeout=120)
