"""Model-side objectives: multi-token prediction, ELECTRA, SpacTor (models/mtp.py, rtd.py).

Each is checked against the plain model it extends (same parameters, same loss where it
must reduce to it), and its masks and stop-gradients are verified by gradients.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from objectax.models import decoder, encdec, encoder, model_objectives, mtp, rtd
from objectax.models import registry as arch_registry
from objectax.models.config import ModelConfig
from objectax.objectives import registry as objective_registry

CONFIG = ModelConfig(d_model=32, num_heads=2, head_dim=16, mlp_dim=64,
                     num_layers=1).with_vocab_size(300)
VOCAB = model_objectives.Vocab(size=300, extra_ids=10)  # ordinary ids [3, 290)


def _build(arch_name, objective_name, **cfg_overrides):
  objective = objective_registry.get(objective_name)
  cfg = objective.config_cls(**cfg_overrides)
  return model_objectives.build(arch_registry.get(arch_name), CONFIG, objective, cfg, VOCAB)


@functools.lru_cache(maxsize=None)
def _setup(arch_name, objective_name, batch_fn, **cfg_overrides):
  """(model, loss, params) built once per configuration and batch kind (tests share them;
  a test that changes params works on a copy)."""
  model, loss = _build(arch_name, objective_name, **cfg_overrides)
  return model, loss, _init(model, batch_fn())


def _init(model, batch):
  init = jax.jit(lambda rng, b: model.init(rng, b, deterministic=True)["params"])
  return nn.meta.unbox(init(jax.random.key(0), batch))


def _paths(tree):
  return {"/".join(str(getattr(k, "key", k)) for k in path)
          for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _loss(loss, model, params, batch, step=0, evaluate=False):
  return _jitted_loss(loss, model, evaluate)(params, batch, jnp.int32(step))


@functools.lru_cache(maxsize=None)
def _jitted_loss(loss, model, evaluate):
  return jax.jit(lambda p, b, step: loss(model, p, b, rng=jax.random.key(7), step=step,
                                         evaluate=evaluate, z_loss=1e-4))


def _grad_norms(fn, params):
  """{top-level parameter group: summed |gradient|} of the scalar fn(params), jitted."""
  grads = jax.jit(jax.grad(fn))(params)
  return {k: float(sum(jnp.abs(x).sum() for x in jax.tree.leaves(v))) for k, v in grads.items()}


# ----------------------------------------------------------------------------- multi-token


@functools.lru_cache(maxsize=None)
def _decoder_batch(seed=0):
  spec = decoder.batch_spec({"targets": 24}, 3, pack=True)
  return {k: jnp.asarray(v) for k, v in decoder.synthetic_batch(spec, 290, seed).items()}


def test_mtp_future_targets_stay_inside_their_document():
  batch = _decoder_batch()
  seg, tgt, w = (np.asarray(batch[k]) for k in
                 ("decoder_segment_ids", decoder.TARGETS_KEY, decoder.WEIGHTS_KEY))
  for offset in range(4):
    targets, weights = (np.asarray(x) for x in mtp.future_targets(batch, offset))
    for b in range(seg.shape[0]):
      for t in range(seg.shape[1]):
        s = t + offset
        ok = s < seg.shape[1] and seg[b, t] > 0 and seg[b, s] == seg[b, t] and w[b, s] > 0
        assert weights[b, t] == int(ok)
        if ok:  # head offset+1 at t predicts x_{t+offset+1} = decoder target at t+offset
          assert targets[b, t] == tgt[b, s]
    if offset:  # some positions lose their target at each document's end
      assert weights.sum() < w.sum()


def test_mtp_with_one_head_is_the_causal_decoder():
  batch = _decoder_batch()
  model, loss = _build("causal_decoder", "mtp", num_predicted_tokens=1)
  plain = arch_registry.get("causal_decoder").make_model(CONFIG)
  params = _init(model, batch)
  assert _paths(params) == _paths(_init(plain, batch))
  got, m = _loss(loss, model, params, batch)
  token = model_objectives.token_loss(decoder.TARGETS_KEY, decoder.WEIGHTS_KEY)
  want, _ = _loss(token, plain, params, batch)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert set(m) == {"loss", "z_loss", "target_tokens"}


def test_mtp_heads_add_blocks_and_sum_their_losses():
  batch = _decoder_batch()
  model, loss, params = _setup("causal_decoder", "mtp", _decoder_batch, num_predicted_tokens=3,
                               extra_head_weight=0.5)
  extra = _paths(params) - _paths(_init(arch_registry.get("causal_decoder").make_model(CONFIG),
                                        batch))
  assert {p.split("/")[0] for p in extra} == {"mtp_block_2", "mtp_block_3", "mtp_norm_2",
                                              "mtp_norm_3"}
  objective, m = _loss(loss, model, params, batch)
  expected = m["loss"] + m["z_loss"] + 0.5 * (m["loss_token_2"] + m["loss_token_3"])
  # z-loss of the extra heads (1e-4 * logsumexp^2 ~ 3e-3) is the only difference.
  assert abs(float(objective) - float(expected)) < 0.5 * 2 * 5e-3
  # Evaluation scores the next-token head alone.
  _, ev = _loss(loss, model, params, batch, evaluate=True)
  np.testing.assert_allclose(ev["loss"], m["loss"], rtol=1e-6)


def test_mtp_heads_never_see_later_tokens():
  """Head k's logits at t depend on no token after t: perturbing token s changes no logit of
  any head before s, and (packed) nothing in another document."""
  batch = _decoder_batch()
  model, _, params = _setup("causal_decoder", "mtp", _decoder_batch, num_predicted_tokens=3,
                            extra_head_weight=0.5)
  run = jax.jit(lambda b: model.apply({"params": params}, b, method=mtp.MtpDecoder.all_logits))
  base = [np.asarray(x) for x in run(batch)]
  s = 11
  tokens = np.asarray(batch["decoder_input_tokens"]).copy()
  tokens[:, s] = np.where(tokens[:, s] == 5, 6, 5)
  moved = [np.asarray(x) for x in run({**batch, "decoder_input_tokens": jnp.asarray(tokens)})]
  seg = np.asarray(batch["decoder_segment_ids"])
  for a, b in zip(base, moved):
    np.testing.assert_array_equal(a[:, :s], b[:, :s])
    other = (seg != seg[:, s:s + 1])
    np.testing.assert_array_equal(a[other], b[other])
    assert np.abs(a[:, s:] - b[:, s:]).max() > 0


# ----------------------------------------------------------------------------- ELECTRA


@functools.lru_cache(maxsize=None)
def _electra_batch(seed=0, length=32, rows=4):
  """An EO batch as electra's data side makes it: 15% selected, 85% masked / 15% kept."""
  rng = np.random.default_rng(seed)
  original = rng.integers(3, 290, size=(rows, length)).astype(np.int32)
  original[:, -5:] = 0  # padding at the end of each row
  selected = (rng.random((rows, length)) < 0.15) & (original > 0)
  masked = selected & (rng.random((rows, length)) < 0.85)
  inputs = np.where(masked, VOCAB.size - 1, original)
  return {encoder.INPUTS_KEY: jnp.asarray(inputs),
          encoder.TARGETS_KEY: jnp.asarray(np.where(selected, original, 0)),
          encoder.WEIGHTS_KEY: jnp.asarray(selected.astype(np.int32))}


def test_electra_keeps_the_encoder_parameters_and_adds_a_narrow_generator():
  batch = _electra_batch()
  model, _ = _build("encoder_only", "electra", generator_fraction=0.5)
  params = _init(model, batch)
  plain = _paths(_init(arch_registry.get("encoder_only").make_model(CONFIG), batch))
  assert plain < _paths(params)
  assert {p.split("/")[0] for p in _paths(params) - plain} == {"generator", "rtd_head"}
  # Shared embeddings: the generator has no table of its own, and half the width.
  assert not any("embed" in p for p in _paths(params["generator"]))
  assert params["generator"]["project_in"].shape == (32, 16)
  assert params["generator"]["body"]["block_0"]["mlp"]["up"].shape == (16, 32)


def test_electra_replaces_only_selected_tokens_with_ordinary_samples():
  batch = _electra_batch()
  model, _, params = _setup("encoder_only", "electra", _electra_batch)
  out = model.apply({"params": params}, batch, jax.random.key(3), method=rtd.ElectraEncoder.forward)
  selected = np.asarray(batch[encoder.TARGETS_KEY]) > 0
  corrupted, replaced = np.asarray(out.corrupted_BL), np.asarray(out.replaced_BL)
  np.testing.assert_array_equal(corrupted[~selected], np.asarray(batch[encoder.INPUTS_KEY])[~selected])
  assert np.all((corrupted[selected] >= 3) & (corrupted[selected] < 290))
  np.testing.assert_array_equal(replaced, selected & (corrupted != np.asarray(batch[encoder.TARGETS_KEY])))
  assert replaced.sum() > 0


def test_electra_gradients_respect_the_stop_gradient_and_the_padding():
  """RTD reaches no generator weight (its samples are discrete); the MLM reaches no
  discriminator block; the shared embedding gets both; padding gives no RTD gradient."""
  batch = _electra_batch()
  model, _, params = _setup("encoder_only", "electra", _electra_batch)
  params = jax.tree.map(lambda x: x, params)  # a copy: the cached params stay as built
  # The RTD head's output starts at zero, which would hide its gradient to the blocks.
  params["rtd_head"]["out"] = jax.random.normal(jax.random.key(1), params["rtd_head"]["out"].shape)

  def terms(p):
    out = model.apply({"params": p}, batch, jax.random.key(3), method=rtd.ElectraEncoder.forward)
    mlm, _, _ = model_objectives.mean_cross_entropy(
        out.gen_logits_BLV, batch[encoder.TARGETS_KEY], batch[encoder.WEIGHTS_KEY], 0.0)
    rtd_loss, _, _ = rtd.rtd_terms(out.rtd_logits_BL, out.replaced_BL,
                                   encoder.segment_ids(batch) > 0)
    return mlm, rtd_loss

  g_rtd = _grad_norms(lambda p: terms(p)[1], params)
  g_mlm = _grad_norms(lambda p: terms(p)[0], params)
  assert g_rtd["generator"] == 0 and g_rtd["block_0"] > 0
  assert g_mlm["block_0"] == 0 and g_mlm["rtd_head"] == 0
  assert g_mlm["generator"] > 0
  assert g_rtd["embed"] > 0 and g_mlm["embed"] > 0

  # Per position: the RTD loss's gradient w.r.t. the logits is zero exactly on padding.
  out = model.apply({"params": params}, batch, jax.random.key(3), method=rtd.ElectraEncoder.forward)
  real = encoder.segment_ids(batch) > 0
  g = np.asarray(jax.grad(lambda lg: rtd.rtd_terms(lg, out.replaced_BL, real)[0])(out.rtd_logits_BL))
  assert np.all(g[~np.asarray(real)] == 0) and np.all(g[np.asarray(real)] != 0)


def test_electra_loss_is_the_weighted_sum():
  batch = _electra_batch()
  model, loss, params = _setup("encoder_only", "electra", _electra_batch)  # weights 1 and 50
  objective, m = _loss(loss, model, params, batch)
  np.testing.assert_allclose(m["loss"], m["mlm_loss"] + 50.0 * m["rtd_loss"], rtol=1e-6)
  np.testing.assert_allclose(objective, m["loss"] + m["z_loss"], rtol=1e-6)
  assert float(m["target_tokens"]) == 4 * 27
  # An untrained RTD head says 1/2 everywhere: log 2 per token.
  np.testing.assert_allclose(m["rtd_loss"], np.log(2), rtol=1e-6)


def test_sampling_follows_the_generator_softmax_over_ordinary_ids():
  """20,000 draws from fixed logits over 8 ids, of which [3, 6) are allowed: each frequency
  is within 4 standard errors of softmax restricted to the allowed ids."""
  logits = jnp.asarray([5.0, 5.0, 5.0, 0.0, 1.0, 2.0, 9.0, 9.0])
  draws = np.asarray(rtd.sample_tokens(jnp.broadcast_to(logits, (200, 100, 8)),
                                       jax.random.key(0), (3, 6))).ravel()
  assert set(np.unique(draws)) <= {3, 4, 5}
  p = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
  freq = np.bincount(draws, minlength=8)[3:6] / draws.size
  se = np.sqrt(p * (1 - p) / draws.size)
  assert np.all(np.abs(freq - p) < 4 * se), (freq, p)


# ----------------------------------------------------------------------------- SpacTor


@functools.lru_cache(maxsize=None)
def _encdec_batch():
  spec = encdec.batch_spec({"inputs": 40, "targets": 12}, 4, pack=True)
  batch = encdec.synthetic_batch(spec, 290, 0)
  # Sentinels at the end of each span, as span corruption writes them.
  tokens = batch["encoder_input_tokens"]
  tokens[:, 5] = np.where(tokens[:, 5] > 0, VOCAB.size - 1, 0)
  return {k: jnp.asarray(v) for k, v in batch.items()}


def test_spactor_before_and_after_tau():
  """step < tau: hybrid, the generator learns; step >= tau (and tau = 0, and evaluation):
  exactly span corruption, and the generator gets no gradient."""
  batch = _encdec_batch()
  model, loss = _build("encoder_decoder", "spactor", tau=5)
  params = _init(model, batch)
  plain = arch_registry.get("encoder_decoder").make_model(CONFIG)
  assert _paths(_init(plain, batch)) < _paths(params)
  token = model_objectives.token_loss(encdec.TARGETS_KEY, encdec.WEIGHTS_KEY)
  sc, _ = _loss(token, plain, params, batch)

  step_loss = lambda p, step: loss(model, p, batch, rng=jax.random.key(7), step=step,
                                   evaluate=False, z_loss=1e-4)[0]
  before, m_before = _loss(loss, model, params, batch, step=4)
  after, m_after = _loss(loss, model, params, batch, step=5)
  assert float(m_before["hybrid"]) == 1 and float(m_after["hybrid"]) == 0
  np.testing.assert_allclose(after, sc, rtol=1e-6)
  assert float(before) > float(after) + 10  # + 50 * RTD (~log 2) + MLM
  grad_norms = jax.jit(lambda p, step: jax.tree.map(lambda g: jnp.abs(g).sum(),
                                                    jax.grad(step_loss)(p, step)))
  hybrid, plain_grads = ({k: float(sum(jax.tree.leaves(v))) for k, v in grad_norms(params, s).items()}
                         for s in (jnp.int32(4), jnp.int32(5)))
  assert hybrid["generator"] > 0 and hybrid["rtd_head"] > 0
  assert plain_grads["generator"] == 0 and plain_grads["rtd_head"] == 0
  _, ev = _loss(loss, model, params, batch, step=4, evaluate=True)
  np.testing.assert_allclose(ev["loss"], m_after["loss"], rtol=1e-6)


def test_spactor_refills_only_ordinary_input_tokens_at_the_mask_rate():
  batch = _encdec_batch()
  model, _ = _build("encoder_decoder", "spactor", mask_rate=0.3)
  params = _init(model, batch)
  tokens = np.asarray(batch["encoder_input_tokens"])
  candidate = (tokens >= 3) & (tokens < 290)
  selected_total, candidates_total = 0, 0
  hybrid = jax.jit(lambda rng: model.apply({"params": params}, batch, rng,
                                            method=rtd.SpactorEncDec.hybrid))
  for seed in range(20):
    out = hybrid(jax.random.key(seed))
    selected, corrupted = np.asarray(out.selected_BS), np.asarray(out.corrupted_BS)
    assert not np.any(selected & ~candidate)  # never a sentinel, EOS or padding
    np.testing.assert_array_equal(corrupted[~selected], tokens[~selected])
    assert np.all((corrupted[selected] >= 3) & (corrupted[selected] < 290))
    np.testing.assert_array_equal(np.asarray(out.replaced_BS), selected & (corrupted != tokens))
    selected_total += selected.sum()
    candidates_total += candidate.sum()
  rate = selected_total / candidates_total
  assert abs(rate - 0.3) < 4 * np.sqrt(0.3 * 0.7 / candidates_total), rate


def test_model_objectives_are_refused_on_other_architectures():
  for name, arch in (("mtp", "causal_decoder"), ("electra", "encoder_only"),
                     ("spactor", "encoder_decoder")):
    objective = objective_registry.get(name)
    assert objective.architectures == (arch,) and objective.model_objective == name
    assert model_objectives.MODEL_OBJECTIVES.get(name).wraps == (arch,)
    for other in arch_registry.ARCHITECTURES.names():
      if other != arch:
        with pytest.raises(Exception, match=f"supports: {arch}"):
          arch_registry.check_supports(other, objective)


@pytest.mark.parametrize("name,kwargs,message", [
    ("electra", {"generator_fraction": 0.0}, "ElectraConfig.generator_fraction must be in (0, 1]"),
    ("electra", {"discriminator_weight": -1.0}, "ElectraConfig.discriminator_weight must be a number >= 0"),
    ("spactor", {"tau": -1}, "SpactorConfig.tau must be an int >= 0"),
    ("spactor", {"mask_rate": 1.5}, "SpactorConfig.mask_rate must be in (0, 1]"),
    ("mtp", {"num_predicted_tokens": 0}, "MtpConfig.num_predicted_tokens must be >= 1"),
])
def test_bad_model_objective_settings_are_one_line_errors(name, kwargs, message):
  from objectax.models.registry import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError) as e:
    objective_registry.get(name).config_cls(**kwargs)
  assert str(e.value).splitlines()[0].startswith(message)
