"""`objectax bench decode`: cached decoding against full recomputation, on synthetic prompts.

Like `bench model`, it parses only the model side of the gin config, so it runs without
TensorFlow or seqio (GPU hosts). Parameters are a fresh initialisation (decoding cost does
not depend on their values). Both paths decode greedily the same `--new_tokens` tokens per
row for `--batch_size` prompts of `--prompt_length` tokens, every row to the end (EOS does
not stop a benchmark):

- cached: the prompt once (prefill), then one token per step from the key/value cache
  (models/decoding.py), as `objectax generate` decodes;
- recompute: each step runs the training model's full forward pass over the whole stream
  so far (fixed at its final length, later positions padding), then takes the last logits.

Each path runs once untimed (compilation) and once timed, in the same process; the ratio
of their decode tokens/s is printed.
"""
from __future__ import annotations

import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from objectax.launch import builder
from objectax.launch.tools.bench_model import DEFAULT_VOCAB, task_lengths
from objectax.models import decoding
from objectax.models import registry as arch_registry
from objectax.models.registry import ConfigError


def _recompute_lm(model, bidirectional: bool, prompt: int, new: int):
  """jit((params, tokens_BL) -> tokens_BL with `new` tokens appended by full forwards)."""
  total = prompt + 1 + new

  def run(params, stream_BL):
    b = stream_BL.shape[0]

    def step(t, tokens_BL):
      batch = {"decoder_input_tokens": tokens_BL,
               "decoder_target_tokens": jnp.ones_like(tokens_BL)}
      if bidirectional:
        batch["decoder_causal_attention"] = jnp.broadcast_to(
            (jnp.arange(total) < prompt + 1).astype(jnp.int32), (b, total))
      logits_BLV = model.apply({"params": params}, batch)
      last = prompt + t
      token_B = jnp.argmax(logits_BLV[:, last], axis=-1).astype(jnp.int32)
      return tokens_BL.at[:, last + 1].set(token_B)

    return jax.lax.fori_loop(0, new, step, stream_BL)
  return jax.jit(run)


def _recompute_seq2seq(model, new: int):
  def run(params, inputs_BS, decoder_BT):
    def step(t, tokens_BT):
      batch = {"encoder_input_tokens": inputs_BS, "decoder_input_tokens": tokens_BT,
               "decoder_target_tokens": jnp.ones_like(tokens_BT)}
      logits_BTV = model.apply({"params": params}, batch)
      token_B = jnp.argmax(logits_BTV[:, t], axis=-1).astype(jnp.int32)
      return tokens_BT.at[:, t + 1].set(token_B)
    return jax.lax.fori_loop(0, new - 1, step, decoder_BT)
  return jax.jit(run)


def run(batch_size: int = 0, prompt_length: int = 64, new_tokens: int = 64,
        vocab_size: int = 0, say=print) -> dict[str, float]:
  """Benchmarks the configured (already parsed) model; returns the figures printed."""
  if prompt_length < 1 or new_tokens < 1:
    raise ConfigError(f"--prompt_length {prompt_length} and --new_tokens {new_tokens} must be "
                      ">= 1")
  cfg = builder.resolve(model_only=True)
  arch = cfg.arch
  batch_size = batch_size or 8
  lengths = task_lengths(arch.name, prompt_length + new_tokens + 1, prompt_length)
  parts = builder.build(cfg, vocab_size=cfg.model.vocab_size or vocab_size or DEFAULT_VOCAB,
                        extra_ids=0, feature_lengths=lengths, batch_size=1)
  model_cfg = parts.model_cfg
  model = parts.scoring_model()
  if not decoding.can_decode(model):
    raise ConfigError(f"bench decode: {arch.name} does not decode left to right; valid "
                      "choices for Experiment.arch: " + ", ".join(
                          n for n in arch_registry.ARCHITECTURES.names()
                          if arch_registry.get(n).left_to_right))
  params = jax.jit(lambda r: model.init(r, {k: jnp.zeros(s.shape, s.dtype)
                                            for k, s in parts.spec.items()})["params"])(
      jax.random.key(0))
  params = jax.tree.map(lambda x: getattr(x, "value", x), params,
                        is_leaf=lambda x: hasattr(x, "value"))
  rng = np.random.default_rng(0)
  prompts = rng.integers(3, model_cfg.vocab_size - 1, (batch_size, prompt_length)).tolist()
  say(f"bench decode: {arch.name}/{cfg.exp.size}, batch {batch_size}, prompt {prompt_length} "
      f"tokens, {new_tokens} new tokens, vocab {model_cfg.vocab_size}, {model_cfg.dtype}, "
      f"scan {model_cfg.scan_layers}, on {jax.device_count()} {jax.devices()[0].platform} "
      "device(s)")
  seq2seq = decoding.reads_inputs_apart(model)
  bidirectional = bool(getattr(model, "bidirectional_inputs", False))

  def cached():
    return decoding.generate(model, params, prompts, max_new_tokens=new_tokens,
                             vocab_size=model_cfg.vocab_size, stop_at_eos=False)

  cached()  # compile
  t0 = time.perf_counter()
  out = cached()
  cached_s = time.perf_counter() - t0
  prefill_s = out.prefill_seconds

  if seq2seq:
    recompute = _recompute_seq2seq(model, new_tokens)
    inputs = jnp.asarray(prompts, jnp.int32)
    start = jnp.zeros((batch_size, new_tokens), jnp.int32)
    args = (params, inputs, start)
  else:
    recompute = _recompute_lm(model, bidirectional, prompt_length, new_tokens)
    stream = np.zeros((batch_size, prompt_length + 1 + new_tokens), np.int32)
    stream[:, 1:prompt_length + 1] = prompts
    args = (params, jnp.asarray(stream))
  recompute(*args).block_until_ready()  # compile
  t0 = time.perf_counter()
  full = np.asarray(recompute(*args).block_until_ready())
  recompute_s = time.perf_counter() - t0
  if seq2seq:
    same = all(full[r, 1:].tolist() == out.tokens[r][:new_tokens - 1]
               for r in range(batch_size))
  else:
    same = all(full[r, prompt_length + 1:].tolist() == out.tokens[r]
               for r in range(batch_size))
  decode_s = max(cached_s - prefill_s, 1e-9)
  figures = {
      "prefill_seconds": prefill_s,
      "cached_tokens_per_second": batch_size * new_tokens / cached_s,
      "cached_decode_tokens_per_second": batch_size * (new_tokens - 1) / decode_s,
      "recompute_tokens_per_second": batch_size * new_tokens / recompute_s,
      "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
      "same_tokens": float(same),
  }
  figures["ratio"] = figures["cached_tokens_per_second"] / figures["recompute_tokens_per_second"]
  say(f"prefill: {prefill_s * 1e3:.1f} ms ({batch_size} x {prompt_length} tokens, and the "
      "first new token)")
  say(f"cached:    {figures['cached_tokens_per_second']:,.0f} tokens/s in all "
      f"({cached_s:.2f} s; {figures['cached_decode_tokens_per_second']:,.0f} tokens/s after "
      "the prefill)")
  say(f"recompute: {figures['recompute_tokens_per_second']:,.0f} tokens/s ({recompute_s:.2f} s)")
  say(f"ratio: cached decode is {figures['ratio']:.1f}x the recompute path's tokens/s; same "
      f"greedy tokens on both paths: {'yes' if same else 'NO'}")
  say(f"peak memory: {figures['peak_rss_gib']:.2f} GiB resident (this process)")
  return figures


def main(files, bindings, batch_size: int, prompt_length: int, new_tokens: int,
         vocab_size: int) -> dict[str, float]:
  from objectax.launch import configure  # pylint: disable=g-import-not-at-top
  configure.parse(files or ["run/quickstart.gin"], bindings, model_only=True)
  return run(batch_size, prompt_length, new_tokens, vocab_size)


if __name__ == "__main__":
  sys.exit(0 if main([], sys.argv[1:], 0, 64, 64, 0) else 1)
