"""weighted_cross_entropy against a numpy reference; z-loss; weights; stability."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from objectax.models.losses import weighted_cross_entropy


def _reference(logits, targets, weights, z_loss):
  logits = logits.astype(np.float64)
  m = logits.max(-1, keepdims=True)
  lse = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]
  target_logit = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
  ce = lse - target_logit
  z = z_loss * lse ** 2
  return (ce * weights).sum(), (z * weights).sum(), weights.sum()


@pytest.mark.parametrize("z_loss", [0.0, 1e-4, 0.5])
def test_matches_numpy_reference(z_loss):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 11)).astype(np.float32) * 3
  targets = rng.integers(0, 11, (3, 5))
  weights = rng.uniform(size=(3, 5)).astype(np.float32) * (rng.uniform(size=(3, 5)) > 0.3)
  got = weighted_cross_entropy(jnp.asarray(logits), jnp.asarray(targets),
                               jnp.asarray(weights), z_loss)
  want = _reference(logits, targets, weights, z_loss)
  for g, w in zip(got, want):
    assert g.dtype == jnp.float32
    np.testing.assert_allclose(float(g), w, rtol=1e-5)


def test_docstring_example():
  loss, z, w = weighted_cross_entropy(jnp.zeros((1, 1, 2)), jnp.array([[1]]),
                                      jnp.array([[1]]), 0.1)
  np.testing.assert_allclose([loss, z, w], [np.log(2), 0.1 * np.log(2) ** 2, 1.0], rtol=1e-6)


def test_z_loss_term():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(2, 4, 7)) + 5.0, jnp.float32)  # log Z far from 0
  targets = jnp.asarray(rng.integers(0, 7, (2, 4)))
  weights = jnp.ones((2, 4))
  base, z0, _ = weighted_cross_entropy(logits, targets, weights, 0.0)
  with_z, z, _ = weighted_cross_entropy(logits, targets, weights, 1e-2)
  assert float(z0) == 0.0 and float(z) > 0.0
  lse = jax.nn.logsumexp(logits, -1)
  np.testing.assert_allclose(float(z), 1e-2 * float(jnp.sum(lse ** 2)), rtol=1e-6)
  np.testing.assert_allclose(float(with_z), float(base), rtol=1e-6)  # CE unchanged


def test_weights_respected_and_zero_weight_positions_get_no_gradient():
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.normal(size=(2, 6, 9)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 9, (2, 6)))
  weights = jnp.asarray([[0, 0, 1, 1, 1, 0], [1, 0, 0, 0, 1, 1]], jnp.int32)
  zero = ~np.asarray(weights, bool)
  # Changing logits where the weight is 0 changes nothing.
  noisy = logits + jnp.asarray(zero[..., None] * rng.normal(size=(2, 6, 9)) * 100, jnp.float32)
  a = weighted_cross_entropy(logits, targets, weights, 1e-4)
  b = weighted_cross_entropy(noisy, targets, weights, 1e-4)
  np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6)
  assert float(a[2]) == 6.0
  grad = jax.grad(lambda l: sum(weighted_cross_entropy(l, targets, weights, 1e-2)[:2]))(logits)
  grad = np.asarray(grad)
  assert np.all(grad[zero] == 0.0)
  assert np.all(np.abs(grad[~zero]).sum(-1) > 0.0)
  # The gradient of the CE part is softmax - onehot at weighted positions.
  grad0 = jax.grad(lambda l: weighted_cross_entropy(l, targets, weights, 0.0)[0])(logits)
  want = (jax.nn.softmax(logits) - jax.nn.one_hot(targets, 9)) * weights[..., None]
  np.testing.assert_allclose(np.asarray(grad0), np.asarray(want), atol=1e-6)


def test_numerically_stable_for_huge_logits():
  logits = jnp.array([[[1e4, -1e4, 0.0], [3e4, 3e4, 3e4]]], jnp.float32)
  targets = jnp.array([[0, 2]])
  loss, z, w = weighted_cross_entropy(logits, targets, jnp.ones((1, 2)), 0.0)
  # Position 0 costs 0, position 1 log 3, up to the float32 spacing at 3e4 (~2e-3).
  np.testing.assert_allclose(float(loss), np.log(3.0), atol=4e-3)
  grad = jax.grad(lambda l: sum(weighted_cross_entropy(l, targets, jnp.ones((1, 2)), 1e-4)[:2]))(
      logits)
  assert np.isfinite(np.asarray(grad)).all()


def test_bfloat16_logits_are_upcast():
  rng = np.random.default_rng(3)
  logits = jnp.asarray(rng.normal(size=(2, 3, 5)), jnp.bfloat16)
  out = weighted_cross_entropy(logits, jnp.zeros((2, 3), jnp.int32), jnp.ones((2, 3)), 1e-4)
  assert all(o.dtype == jnp.float32 for o in out)
  want = _reference(np.asarray(logits.astype(jnp.float32)), np.zeros((2, 3), int),
                    np.ones((2, 3)), 1e-4)
  np.testing.assert_allclose(float(out[0]), want[0], rtol=1e-5)


def test_group_sums_split_the_loss_exactly_chunked_or_not():
  """Per-group (mixture component) cross-entropy and weight sums add up to the totals, and
  the chunked loss gives the same groups as the plain one."""
  from objectax.models import losses  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  hidden = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(8, 11)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 11, (2, 5)), jnp.int32)
  weights = jnp.asarray([[1, 1, 1, 0, 1], [1, 0, 1, 1, 1]], jnp.float32)
  groups = jnp.asarray([[1, 1, 2, 0, 2], [3, 0, 1, 3, 3]], jnp.int32)
  logits = jnp.einsum("BLD,DV->BLV", hidden, kernel)
  loss, z, weight, loss_g, weight_g = losses.weighted_cross_entropy(
      logits, targets, weights, 1e-4, groups, 3)
  plain = losses.weighted_cross_entropy(logits, targets, weights, 1e-4)
  np.testing.assert_allclose([loss, z, weight], plain, rtol=1e-6)
  # Group 0 positions (here weight 0 at [0, 3]; [1, 1] has weight 0 too) belong to none.
  np.testing.assert_allclose(weight_g, [3.0, 2.0, 3.0])
  np.testing.assert_allclose(float(jnp.sum(loss_g)), float(loss), rtol=1e-6)
  chunked = losses.chunked_cross_entropy(hidden, kernel, targets, weights, 1e-4, 3,
                                         groups_BL=groups, num_groups=3)
  for a, b in zip(chunked, (loss, z, weight, loss_g, weight_g)):
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_component_metrics_count_tokens_examples_and_losses():
  from objectax.launch import step  # pylint: disable=g-import-not-at-top
  from objectax.models import model_objectives as mo  # pylint: disable=g-import-not-at-top
  batch = {mo.COMPONENT_KEY: jnp.asarray([[1, 1, 2, 2, 0]]),
           mo.COMPONENT_START_KEY: jnp.asarray([[1, 0, 1, 0, 0]]),
           "w": jnp.asarray([[0, 1, 1, 1, 0]])}
  metrics = {mo.COMPONENT_LOSS_SUMS: jnp.asarray([2.0, 6.0]),
             mo.COMPONENT_WEIGHT_SUMS: jnp.asarray([1.0, 2.0]), "loss": 8.0 / 3}
  out = step.component_metrics(batch, metrics, ("a", "b"), "w")
  assert float(out["loss/a"]) == 2.0 and float(out["loss/b"]) == 3.0
  assert float(out["tokens/a"]) == 1.0 and float(out["tokens/b"]) == 2.0
  assert float(out["examples/a"]) == 1.0 and float(out["examples/b"]) == 1.0
  assert mo.COMPONENT_LOSS_SUMS not in out
