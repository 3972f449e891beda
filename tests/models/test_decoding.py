"""Cached decoding equals the training model's full forward, step by step, on every
decoding architecture and layer option; rows decode as they do alone; strategies agree."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_testing import tiny_config
from objectax.models import decoder, decoding, encdec
from objectax.models.registry import ConfigError

PROMPTS = [[5, 6, 7], [9, 10, 11, 12, 13], [20]]  # three lengths in one batch
INPUTS = [[5, 6, 7, 1], [9, 10, 11, 12, 13, 1], [20, 1]]
NEW = 6
OPTIONS = [dict(position_embedding=pe, scan_layers=scan, tie_embeddings=tied, mlp_gated=gated)
           for pe, scan, tied, gated in (("rope", False, True, True), ("rope", True, False, False),
                                         ("relative", False, False, True),
                                         ("relative", True, True, False))]


def _ids(options):
  return "-".join(f"{k}={v}" for k, v in options.items())


def _lm(options, bidirectional, seed=0):
  model = decoder.Model(tiny_config(**options), bidirectional_inputs=bidirectional)
  params = model.init(jax.random.key(seed),
                      {"decoder_input_tokens": jnp.zeros((1, 8), jnp.int32)})["params"]
  return model, params


def _ed(options, seed=1):
  model = encdec.Model(tiny_config(**options))
  params = model.init(jax.random.key(seed), {
      "encoder_input_tokens": jnp.ones((1, 8), jnp.int32),
      "decoder_input_tokens": jnp.zeros((1, 4), jnp.int32)})["params"]
  return model, params


def _full_lm(model, params, stream, prefix, bidirectional):
  """The training model's logits over one unpacked row (its prefix bidirectional for ND)."""
  n = len(stream)
  batch = {"decoder_input_tokens": jnp.array([stream]),
           "decoder_target_tokens": jnp.ones((1, n), jnp.int32)}
  if bidirectional:
    batch["decoder_causal_attention"] = jnp.array([[1] * prefix + [0] * (n - prefix)])
  return np.asarray(model.apply({"params": params}, batch))[0]


SAMPLED = decoding.Strategy(temperature=1.0, seed=3)  # varied tokens, so every step differs


@pytest.mark.parametrize("options", OPTIONS, ids=_ids)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "prefix"])
def test_lm_cached_steps_equal_the_full_forward(options, bidirectional):
  model, params = _lm(options, bidirectional)
  out = decoding.generate_lm(model, params, PROMPTS, max_new_tokens=NEW, vocab_size=100,
                             strategy=SAMPLED, bidirectional=bidirectional, keep_logits=True)
  for row, prompt in enumerate(PROMPTS):
    generated = out.tokens[row]
    assert generated, row
    stream = [0, *prompt, *generated[:-1]]
    full = _full_lm(model, params, stream, len(prompt) + 1, bidirectional)
    for t in range(len(generated)):
      np.testing.assert_allclose(out.step_logits[t, row], full[len(prompt) + t], atol=1e-5)


@pytest.mark.parametrize("options", OPTIONS, ids=_ids)
def test_ed_cached_steps_equal_the_full_forward(options):
  model, params = _ed(options)
  out = decoding.generate_seq2seq(model, params, INPUTS, max_new_tokens=NEW, vocab_size=100,
                                  strategy=SAMPLED, keep_logits=True)
  for row, inputs in enumerate(INPUTS):
    generated = out.tokens[row]
    batch = {"encoder_input_tokens": jnp.array([inputs]),
             "decoder_input_tokens": jnp.array([[0, *generated[:-1]]]),
             "decoder_target_tokens": jnp.ones((1, len(generated)), jnp.int32)}
    full = np.asarray(model.apply({"params": params}, batch))[0]
    for t in range(len(generated)):
      np.testing.assert_allclose(out.step_logits[t, row], full[t], atol=1e-5)


def test_the_prefix_decoder_prefill_is_bidirectional():
  """The same parameters decode differently as CD and ND: the prefix mask is in effect."""
  cd, params = _lm(OPTIONS[0], False)
  nd = decoder.Model(cd.config, bidirectional_inputs=True)
  first = [decoding.generate_lm(m, params, PROMPTS[1:2], max_new_tokens=1, vocab_size=100,
                                keep_logits=True, bidirectional=b).step_logits[0, 0]
           for m, b in ((cd, False), (nd, True))]
  assert np.abs(first[0] - first[1]).max() > 1e-3


@pytest.mark.parametrize("strategy", [decoding.Strategy(), SAMPLED], ids=["greedy", "sampled"])
@pytest.mark.parametrize("arch", ["causal_decoder", "prefix_decoder", "encoder_decoder"])
def test_each_row_decodes_as_it_does_alone(arch, strategy):
  """Prompts of three lengths in one batch: every row's output is its output alone (a
  sampled row too, given its row id), and padding the prompts wider changes nothing."""
  if arch == "encoder_decoder":
    model, params = _ed(OPTIONS[2])
    rows = INPUTS
  else:
    model, params = _lm(OPTIONS[1], arch == "prefix_decoder", seed=4)
    rows = PROMPTS
  run = lambda rows, **kw: decoding.generate(model, params, rows, max_new_tokens=NEW,
                                             vocab_size=100, strategy=strategy, **kw).tokens
  together = run(rows)
  assert [run([r], row_ids=[i])[0] for i, r in enumerate(rows)] == together
  assert run(rows, width=16) == together
  assert run(rows[::-1], row_ids=[2, 1, 0]) == together[::-1]


@pytest.mark.parametrize("arch", ["causal_decoder", "encoder_decoder"])
def test_bfloat16_decoding_follows_the_full_forward(arch):
  """bf16 activations: the cached steps' logits stay within bf16 rounding of the training
  model's forward over the same tokens."""
  options = dict(OPTIONS[2], dtype="bfloat16")
  if arch == "encoder_decoder":
    model, params = _ed(options)
    out = decoding.generate_seq2seq(model, params, INPUTS[:1], max_new_tokens=NEW,
                                    vocab_size=100, strategy=SAMPLED, keep_logits=True)
    generated = out.tokens[0]
    full = np.asarray(model.apply({"params": params}, {
        "encoder_input_tokens": jnp.array(INPUTS[:1]),
        "decoder_input_tokens": jnp.array([[0, *generated[:-1]]]),
        "decoder_target_tokens": jnp.ones((1, len(generated)), jnp.int32)}), np.float32)[0]
    start = 0
  else:
    model, params = _lm(options, False)
    out = decoding.generate_lm(model, params, PROMPTS[:1], max_new_tokens=NEW, vocab_size=100,
                               strategy=SAMPLED, keep_logits=True)
    generated = out.tokens[0]
    full = np.asarray(_full_lm(model, params, [0, *PROMPTS[0], *generated[:-1]], 0, False),
                      np.float32)
    start = len(PROMPTS[0])
  assert len(generated) == NEW
  steps = out.step_logits[:, 0]
  assert steps.dtype == np.float32 and np.isfinite(steps).all()
  scale = np.abs(full).max()
  np.testing.assert_allclose(steps, full[start:start + NEW], atol=0.02 * scale)  # seen: 0.7-0.9%


def test_sampling_limits_equal_greedy():
  model, params = _lm(OPTIONS[0], False, seed=2)
  go = lambda s: decoding.generate_lm(model, params, PROMPTS, max_new_tokens=NEW,
                                      vocab_size=100, strategy=s).tokens
  greedy = go(decoding.Strategy())
  assert go(decoding.Strategy(temperature=1e-6, seed=7)) == greedy
  assert go(decoding.Strategy(temperature=1.0, top_k=1, seed=7)) == greedy
  assert go(decoding.Strategy(temperature=1.0, top_p=1e-6, seed=7)) == greedy
  sampled = go(decoding.Strategy(temperature=1.0, seed=7))
  assert sampled == go(decoding.Strategy(temperature=1.0, seed=7))  # deterministic per seed
  assert sampled != greedy


def test_top_k_and_top_p_keep_only_the_likeliest_tokens():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  seen = {int(decoding.choose(logits, decoding.Strategy(temperature=1.0, top_k=2),
                              jax.random.key(i), 4)[0]) for i in range(200)}
  assert seen == {0, 1}
  seen = {int(decoding.choose(logits, decoding.Strategy(temperature=1.0, top_p=0.9),
                              jax.random.key(i), 4)[0]) for i in range(300)}
  assert seen == {0, 1, 2}  # 0.5 + 0.3 < 0.9: the third is needed, the fourth is not
  # Ids past the vocabulary (the table's padding) are never chosen.
  padded = jnp.array([[0.0, 0.0, 9.0]])
  assert int(decoding.choose(padded, decoding.Strategy(), jax.random.key(0), 2)[0]) in (0, 1)


@pytest.mark.parametrize("kwargs, says", [
    (dict(temperature=-1.0), "temperature"), (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"), (dict(top_k=-2), "top_k")])
def test_bad_strategies_are_one_line(kwargs, says):
  with pytest.raises(ConfigError, match=says):
    decoding.Strategy(**kwargs)


def _greedy_scores(out, alpha):
  """Each greedy row's beam score: its tokens' log-probabilities from the kept logits."""
  scores = []
  for row, tokens in enumerate(out.tokens):
    logp = jax.nn.log_softmax(jnp.asarray(out.step_logits[:len(tokens), row, :100]), axis=-1)
    scores.append(decoding.sequence_score([float(logp[t, i]) for t, i in enumerate(tokens)],
                                          alpha))
  return scores


@pytest.mark.parametrize("arch", ["causal_decoder", "encoder_decoder"])
def test_beam_search_one_beam_is_greedy_and_four_beams_score_no_lower(arch):
  rng = np.random.default_rng(0)
  rows = [list(rng.integers(3, 90, rng.integers(2, 7))) for _ in range(32)]
  if arch == "encoder_decoder":
    model, params = _ed(OPTIONS[2])
    rows = [r + [1] for r in rows]
    go = lambda s, keep=False: decoding.generate_seq2seq(
        model, params, rows, max_new_tokens=NEW, vocab_size=100, strategy=s, keep_logits=keep)
  else:
    model, params = _lm(OPTIONS[0], False, seed=5)
    go = lambda s, keep=False: decoding.generate_lm(
        model, params, rows, max_new_tokens=NEW, vocab_size=100, strategy=s, keep_logits=keep)
  greedy = go(decoding.Strategy(), keep=True)
  assert go(decoding.Strategy(beams=1, alpha=0.0)).tokens == greedy.tokens
  for alpha in (0.0, 0.6):
    beam = go(decoding.Strategy(beams=4, alpha=alpha))
    for got, base in zip(beam.scores, _greedy_scores(greedy, alpha)):
      assert got >= base - 1e-4, (got, base)
    assert all(len(t) <= NEW for t in beam.tokens)
    if arch == "causal_decoder":  # the reported score is the returned sequence's own
      for row in range(4):
        tokens = beam.tokens[row]
        full = _full_lm(model, params, [0, *rows[row], *tokens], len(rows[row]) + 1, False)
        logp = jax.nn.log_softmax(jnp.asarray(full[:, :100]), axis=-1)
        own = [float(logp[len(rows[row]) + t, i]) for t, i in enumerate(tokens)]
        assert beam.scores[row] == pytest.approx(decoding.sequence_score(own, alpha), abs=1e-4)


def test_beam_settings_are_checked():
  with pytest.raises(ConfigError, match="beam size 0 must be"):
    decoding.Strategy(beams=0)
  with pytest.raises(ConfigError, match="drop --temperature"):
    decoding.Strategy(beams=4, temperature=0.7)
