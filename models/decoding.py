"""Cached autoregressive decoding through the training modules (no second model).

The decoding model is the architecture's own Linen module built with `cache_length` > 0
(`make_decoder`): the same parameters, and each self-attention keeps the keys and values of
every position in a "cache" collection whose slot is the position (`layers.Attention`).

- Causal decoder: the prompt's stream, `[0] + prompt` exactly as training's shifted inputs
  begin, is processed once (prefill, causal); then one token per step per row, each at
  its own position, attending to the slots up to it.
- Prefix decoder: the same, with the whole prompt stream a bidirectional prefix in the
  prefill (the inputs plus one position, as `decoder_causal_attention` marks in training).
- Encoder-decoder: the encoder runs once; the decoder starts from 0 at position 0 and
  its first call caches every layer's cross-attention keys and values.

Rows of different prompt lengths decode together: prompts are right-padded, each row's
first generated token is read at its own last prompt position and every later token sits
at that row's next position, so a row's output is the one it gets alone. A row stops at
its EOS (later tokens are padding, 0); decoding stops when every row has, or after
`max_new_tokens`.

Strategies: greedy, and sampling with a temperature, top-k and top-p (nucleus), seeded;
each row samples from a key of its own (the seed, the step and the row's id), so a row's
output does not depend on the rows batched with it.

TF-free: the model-only path (GPU hosts) decodes too.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from objectax.models.registry import ConfigError

EOS_ID = 1


@dataclasses.dataclass(frozen=True)
class Strategy:
  """How the next token is chosen.

  Attributes:
    temperature: 0 = greedy (argmax); > 0 samples from softmax(logits / temperature).
    top_k: sample among the k most likely tokens only (0 = all).
    top_p: sample among the fewest most likely tokens whose probability reaches p (1 = all).
    seed: the sampling seed (the same seed gives the same outputs).
    beams: > 1: beam search with this many beams (greedy scoring, no sampling).
    alpha: beam search's length penalty, as t5x's: a finished sequence of n tokens scores
      (sum of its log-probabilities) / ((5 + n) / 6) ** alpha; 0 = no penalty.
  """
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0
  seed: int = 0
  beams: int = 1
  alpha: float = 0.6

  def __post_init__(self):
    if not (isinstance(self.temperature, (int, float)) and self.temperature >= 0):
      raise ConfigError(f"temperature {self.temperature!r} must be >= 0 (0 = greedy)")
    if not (isinstance(self.top_k, int) and self.top_k >= 0):
      raise ConfigError(f"top_k {self.top_k!r} must be an int >= 0 (0 = no top-k)")
    if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
      raise ConfigError(f"top_p {self.top_p!r} must be in (0, 1] (1 = no nucleus cut)")
    if not (isinstance(self.beams, int) and self.beams >= 1):
      raise ConfigError(f"beam size {self.beams!r} must be an int >= 1 (1 = no beam search)")
    if self.beams > 1 and (self.temperature or self.top_k or self.top_p < 1):
      raise ConfigError("beam search keeps the likeliest beams: drop --temperature, --top_k "
                        "and --top_p with --beams")
    if not (isinstance(self.alpha, (int, float)) and self.alpha >= 0):
      raise ConfigError(f"alpha {self.alpha!r} must be >= 0 (0 = no length penalty)")


def length_penalty(length: jax.Array, alpha: float) -> jax.Array:
  """t5x's brevity penalty ((5 + length) / 6) ** alpha."""
  return ((5.0 + length.astype(jnp.float32)) / 6.0) ** alpha


def sequence_score(log_probs: Sequence[float], alpha: float) -> float:
  """A finished sequence's beam score: its summed log-probability over the penalty."""
  return float(sum(log_probs) / length_penalty(jnp.asarray(len(log_probs)), alpha))


def choose(logits_BV: jax.Array, strategy: Strategy, rng: jax.Array,
           vocab_size: int) -> jax.Array:
  """The next token of each row under `strategy` (ids beyond `vocab_size` never chosen).
  `rng`: one key for the batch, or keys_B, one per row."""
  logits_BV = logits_BV.astype(jnp.float32)
  valid_V = jnp.arange(logits_BV.shape[-1]) < vocab_size
  logits_BV = jnp.where(valid_V, logits_BV, -jnp.inf)
  if strategy.temperature == 0:
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  logits_BV = logits_BV / strategy.temperature
  if strategy.top_k:
    kth_B1 = jax.lax.top_k(logits_BV, min(strategy.top_k, vocab_size))[0][:, -1:]
    logits_BV = jnp.where(logits_BV < kth_B1, -jnp.inf, logits_BV)
  if strategy.top_p < 1:
    sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
    probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
    # Keep a token while the probability of the tokens before it is below p.
    before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
    cutoff_B1 = jnp.min(jnp.where(before_BV < strategy.top_p, sorted_BV, jnp.inf), axis=-1,
                        keepdims=True)
    logits_BV = jnp.where(logits_BV < cutoff_B1, -jnp.inf, logits_BV)
  if rng.ndim:  # a key per row
    return jax.vmap(jax.random.categorical)(rng, logits_BV).astype(jnp.int32)
  return jax.random.categorical(rng, logits_BV, axis=-1).astype(jnp.int32)


def can_decode(model: Any) -> bool:
  """Whether the architecture's module decodes left to right (has a cache)."""
  return hasattr(model, "cache_length")


def generate(model: Any, params: Any, rows: Sequence[Sequence[int]], *, max_new_tokens: int,
             strategy: Strategy = Strategy(), vocab_size: int, stop_at_eos: bool = True,
             row_ids: Optional[Sequence[int]] = None, width: int = 0) -> Output:
  """Decodes each row with whichever layout the module has: an encoder-decoder reads the
  rows as its inputs (`generate_seq2seq`), a decoder-only model continues them as prompts
  (`generate_lm`, bidirectionally over them for the prefix decoder).

  `row_ids`: each row's sampling id (default its index), so that a row samples the same
  tokens whatever it is batched with. `width`: pad the prompts to at least this many
  positions, so batches of different prompt lengths share one compiled program."""
  if reads_inputs_apart(model):
    return generate_seq2seq(model, params, rows, max_new_tokens=max_new_tokens,
                            strategy=strategy, vocab_size=vocab_size, stop_at_eos=stop_at_eos,
                            row_ids=row_ids, width=width)
  return generate_lm(model, params, rows, max_new_tokens=max_new_tokens, strategy=strategy,
                     vocab_size=vocab_size,
                     bidirectional=bool(getattr(model, "bidirectional_inputs", False)),
                     stop_at_eos=stop_at_eos, row_ids=row_ids, width=width)


def reads_inputs_apart(model: Any) -> bool:
  """Whether the module reads a prompt in an encoder of its own (then with EOS, as its
  training inputs end) rather than as the start of one stream."""
  return hasattr(model, "encode")


def make_decoder(model: Any, cache_length: int) -> Any:
  """The decoding twin of an architecture's module: `cache_length` slots, same params."""
  if not hasattr(model, "cache_length"):
    raise ConfigError(f"{type(model).__module__} cannot decode left to right (no cache)")
  return model.clone(cache_length=cache_length, parent=None)


def _prefill_mask(lengths_B: jax.Array, prefill: int, slots: int,
                  bidirectional: bool) -> jax.Array:
  """mask_B1PS of a right-padded prompt stream: causal; with `bidirectional` each row's
  first lengths_B positions (its prompt stream) also see each other both ways."""
  q_P1 = jnp.arange(prefill)[:, None]
  k_1S = jnp.arange(slots)[None, :]
  mask_BPS = jnp.broadcast_to(k_1S <= q_P1, (lengths_B.shape[0], prefill, slots))
  if bidirectional:
    inside_BP1 = (q_P1[None] < lengths_B[:, None, None])
    inside_B1S = (k_1S[None] < lengths_B[:, None, None])
    mask_BPS = mask_BPS | (inside_BP1 & inside_B1S)
  return mask_BPS[:, None]


def _step_mask(positions_B: jax.Array, slots: int) -> jax.Array:
  """mask_B11S of one new token per row: its own and every earlier slot."""
  return (jnp.arange(slots)[None, :] <= positions_B[:, None])[:, None, None, :]


@dataclasses.dataclass
class Output:
  """Decoded ids per row (EOS included when reached) and, when asked for, the logits of
  every step, float32 (new_tokens, B, V)."""
  tokens: list[list[int]]
  step_logits: Optional[np.ndarray] = None
  prefill_seconds: float = 0.0  # the prompt's pass (and the encoder's), compiled beforehand
  scores: Optional[list[float]] = None  # beam search: each row's best score


def _finish(tokens_NB: np.ndarray) -> list[list[int]]:
  out = []
  for row in tokens_NB.T.tolist():
    cut = row.index(EOS_ID) + 1 if EOS_ID in row else len(row)
    out.append(row[:cut])
  return out


def generate_lm(model: Any, params: Any, prompts: Sequence[Sequence[int]], *,
                max_new_tokens: int, strategy: Strategy = Strategy(), vocab_size: int,
                bidirectional: bool = False, keep_logits: bool = False,
                stop_at_eos: bool = True, row_ids: Optional[Sequence[int]] = None,
                width: int = 0) -> Output:
  """Continues each prompt (ids, no BOS) with the decoder-only `model` (decoder.Model).
  `stop_at_eos` False: every row generates `max_new_tokens` (benchmarks). `row_ids` and
  `width` as in `generate` (the width counts the BOS)."""
  if not prompts:
    return Output([])
  streams = [[0, *map(int, p)] for p in prompts]
  lengths = np.array([len(s) for s in streams], np.int32)
  prefill = max(int(lengths.max()), width)
  slots = prefill + max_new_tokens
  tokens_BP = np.zeros((len(streams), prefill), np.int32)
  for row, s in enumerate(streams):
    tokens_BP[row, :len(s)] = s
  decoder = make_decoder(model, slots)
  run = _lm_runner(decoder, bool(bidirectional), strategy, int(vocab_size), slots)
  return run(params, jnp.asarray(tokens_BP), jnp.asarray(lengths), max_new_tokens,
             keep_logits, stop_at_eos, _row_ids(row_ids, len(streams)))


def generate_seq2seq(model: Any, params: Any, inputs: Sequence[Sequence[int]], *,
                     max_new_tokens: int, strategy: Strategy = Strategy(), vocab_size: int,
                     keep_logits: bool = False, stop_at_eos: bool = True,
                     row_ids: Optional[Sequence[int]] = None, width: int = 0) -> Output:
  """Decodes targets for each inputs row (ids, EOS included as in training) with the
  encoder-decoder `model` (encdec.Model). `row_ids` and `width` as in `generate`."""
  if not inputs:
    return Output([])
  width = max(max(len(x) for x in inputs), width)
  tokens_BS = np.zeros((len(inputs), width), np.int32)
  for row, x in enumerate(inputs):
    tokens_BS[row, :len(x)] = x
  decoder = make_decoder(model, max_new_tokens)
  run = _seq2seq_runner(decoder, strategy, int(vocab_size), max_new_tokens)
  return run(params, jnp.asarray(tokens_BS), max_new_tokens, keep_logits, stop_at_eos,
             _row_ids(row_ids, len(inputs)))


def _row_ids(row_ids: Optional[Sequence[int]], rows: int) -> jax.Array:
  ids = np.arange(rows) if row_ids is None else np.asarray(row_ids)
  if ids.shape != (rows,):
    raise ValueError(f"row_ids has {ids.size} ids for {rows} rows")
  return jnp.asarray(ids, jnp.uint32)


class _Runner:
  """A jitted prefill, and the whole decode after it as one jitted loop (`lax.while_loop`
  over the steps, the cache carried), so a step costs no host round trip."""

  def __init__(self, prefill, step, strategy: Strategy, vocab_size: int):
    self._prefill = prefill
    self._choose = functools.partial(choose, strategy=strategy, vocab_size=vocab_size)
    self._seed = strategy.seed
    self._strategy, self._vocab_size = strategy, vocab_size
    self._step = step
    self._loops: dict = {}

  def _loop_fn(self, max_new: int, keep_logits: bool, stop_at_eos: bool):
    key = (max_new, keep_logits, stop_at_eos)
    if key in self._loops:
      return self._loops[key]

    def loop(params, cache, logits_BV, positions_B, rng, row_ids_B, *step_args):
      b, v = logits_BV.shape
      tokens_NB = jnp.zeros((max_new, b), jnp.int32)
      kept_NBV = jnp.zeros((max_new if keep_logits else 0, b, v), jnp.float32)

      def body(carry):
        t, cache, logits_BV, done_B, tokens_NB, kept_NBV = carry
        if keep_logits:
          kept_NBV = kept_NBV.at[t].set(logits_BV.astype(jnp.float32))
        keys_B = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.fold_in(rng, t), row_ids_B)
        token_B = self._choose(logits_BV, rng=keys_B)
        token_B = jnp.where(done_B, 0, token_B)
        tokens_NB = tokens_NB.at[t].set(token_B)
        if stop_at_eos:
          done_B = done_B | (token_B == EOS_ID)
        logits_BV, cache = self._step(params, cache, token_B, positions_B + t, *step_args)
        return t + 1, cache, logits_BV, done_B, tokens_NB, kept_NBV

      def more(carry):
        t, _, _, done_B, _, _ = carry
        return (t < max_new) & ~jnp.all(done_B)

      done_B = jnp.zeros((b,), bool)
      carry = (jnp.int32(0), cache, logits_BV, done_B, tokens_NB, kept_NBV)
      t, _, _, _, tokens_NB, kept_NBV = jax.lax.while_loop(more, body, carry)
      return t, tokens_NB, kept_NBV

    self._loops[key] = jax.jit(loop)
    return self._loops[key]

  def _beam_fn(self, max_new: int, beams: int, alpha: float, vocab_size: int):
    key = ("beam", max_new, beams, alpha)
    if key in self._loops:
      return self._loops[key]

    def loop(params, cache, logits_BV, positions_B, *step_args):
      b = logits_BV.shape[0]
      k = beams
      tile = lambda x, axis: jnp.repeat(x, k, axis=axis)
      cache = jax.tree.map(lambda x: tile(x, x.ndim - 4), cache)
      step_args = tuple(tile(a, 0) for a in step_args)
      logits_KV = tile(logits_BV, 0)
      positions_K = tile(positions_B, 0)
      alive_seq = jnp.zeros((b, k, max_new), jnp.int32)
      alive_lp = jnp.tile(jnp.array([0.0] + [-jnp.inf] * (k - 1), jnp.float32), (b, 1))
      done_seq = jnp.zeros((b, k, max_new), jnp.int32)
      done_score = jnp.full((b, k), -jnp.inf, jnp.float32)
      valid_V = jnp.arange(logits_BV.shape[-1]) < vocab_size

      def body(t, carry):
        cache, logits_KV, alive_seq, alive_lp, done_seq, done_score = carry
        logp = jax.nn.log_softmax(jnp.where(valid_V, logits_KV.astype(jnp.float32), -jnp.inf))
        v = logp.shape[-1]
        cand = (alive_lp[:, :, None] + logp.reshape(b, k, v)).reshape(b, k * v)
        top_lp, top_i = jax.lax.top_k(cand, 2 * k)
        parent, token = top_i // v, (top_i % v).astype(jnp.int32)
        seq = jnp.take_along_axis(alive_seq, parent[:, :, None], axis=1)
        seq = seq.at[:, :, t].set(token)
        eos = token == EOS_ID
        # Finished: the candidates ending in EOS, scored with the penalty, merged with the
        # finished so far; the best k stay.
        score = jnp.where(eos, top_lp / length_penalty(t + 1, alpha), -jnp.inf)
        all_score = jnp.concatenate([done_score, score], axis=1)
        all_seq = jnp.concatenate([done_seq, seq], axis=1)
        best_score, best = jax.lax.top_k(all_score, k)
        done_seq = jnp.take_along_axis(all_seq, best[:, :, None], axis=1)
        # Alive: the best k candidates that did not end.
        alive_lp, keep = jax.lax.top_k(jnp.where(eos, -jnp.inf, top_lp), k)
        alive_seq = jnp.take_along_axis(seq, keep[:, :, None], axis=1)
        source = jnp.take_along_axis(parent, keep, axis=1)  # (b, k) beam each came from
        rows = (jnp.arange(b)[:, None] * k + source).reshape(-1)
        cache = jax.tree.map(lambda x: jnp.take(x, rows, axis=x.ndim - 4), cache)
        next_tokens = alive_seq[:, :, t].reshape(-1)
        logits_KV, cache = self._step(params, cache, next_tokens, positions_K + t, *step_args)
        return cache, logits_KV, alive_seq, alive_lp, done_seq, best_score

      carry = (cache, logits_KV, alive_seq, alive_lp, done_seq, done_score)
      _, _, alive_seq, alive_lp, done_seq, done_score = jax.lax.fori_loop(0, max_new, body, carry)
      # Beams still alive after max_new tokens compete as they are.
      alive_score = alive_lp / length_penalty(jnp.asarray(max_new), alpha)
      all_score = jnp.concatenate([done_score, alive_score], axis=1)
      all_seq = jnp.concatenate([done_seq, alive_seq], axis=1)
      best = jnp.argmax(all_score, axis=1)
      return (jnp.take_along_axis(all_seq, best[:, None, None], axis=1)[:, 0],
              jnp.take_along_axis(all_score, best[:, None], axis=1)[:, 0])

    self._loops[key] = jax.jit(loop)
    return self._loops[key]

  def loop(self, params, cache, logits_BV, positions_B, max_new: int,
           keep_logits: bool, step_args: tuple = (), stop_at_eos: bool = True,
           row_ids_B: Optional[jax.Array] = None) -> Output:
    if self._strategy.beams > 1:
      fn = self._beam_fn(max_new, self._strategy.beams, float(self._strategy.alpha),
                         self._vocab_size)
      seq_BN, score_B = fn(params, cache, logits_BV, positions_B, *step_args)
      return Output(_finish(np.asarray(seq_BN).T), scores=np.asarray(score_B).tolist())
    fn = self._loop_fn(max_new, keep_logits, stop_at_eos)
    if row_ids_B is None:
      row_ids_B = _row_ids(None, logits_BV.shape[0])
    t, tokens_NB, kept_NBV = fn(params, cache, logits_BV, positions_B,
                                jax.random.key(self._seed), row_ids_B, *step_args)
    t = int(t)
    out = _finish(np.asarray(tokens_NB)[:t])
    return Output(out, np.asarray(kept_NBV)[:t] if keep_logits else None)


def _cached_runner(make):
  """One runner (its jitted functions) per decoding model and settings."""
  runners: dict = {}

  def get(decoder, *settings):
    key = (type(decoder).__qualname__, decoder.config,
           getattr(decoder, "bidirectional_inputs", None), *settings)
    if key not in runners:
      if len(runners) >= 16:
        runners.pop(next(iter(runners)))
      runners[key] = make(decoder, *settings)
    return runners[key]

  return get


@_cached_runner
def _lm_runner(decoder, bidirectional: bool, strategy: Strategy, vocab_size: int, slots: int):
  @jax.jit
  def prefill(params, tokens_BP, lengths_B):
    positions_BP = jnp.broadcast_to(jnp.arange(tokens_BP.shape[1]), tokens_BP.shape)
    mask = _prefill_mask(lengths_B, tokens_BP.shape[1], slots, bidirectional)
    logits_BPV, state = decoder.apply({"params": params}, tokens_BP, positions_BP, mask,
                                      method="decode", mutable=["cache"])
    last_BV = jnp.take_along_axis(logits_BPV, (lengths_B - 1)[:, None, None], axis=1)[:, 0]
    return last_BV, state["cache"]

  def step(params, cache, token_B, positions_B):
    logits_B1V, state = decoder.apply({"params": params, "cache": cache}, token_B[:, None],
                                      positions_B[:, None], _step_mask(positions_B, slots),
                                      method="decode", mutable=["cache"])
    return logits_B1V[:, 0], state["cache"]

  runner = _Runner(prefill, step, strategy, vocab_size)

  def run(params, tokens_BP, lengths_B, max_new, keep_logits, stop_at_eos=True,
          row_ids_B=None):
    t0 = time.perf_counter()
    logits_BV, cache = jax.block_until_ready(prefill(params, tokens_BP, lengths_B))
    prefill_s = time.perf_counter() - t0
    out = runner.loop(params, cache, logits_BV, lengths_B, max_new, keep_logits,
                      stop_at_eos=stop_at_eos, row_ids_B=row_ids_B)
    return dataclasses.replace(out, prefill_seconds=prefill_s)

  return run


@_cached_runner
def _seq2seq_runner(decoder, strategy: Strategy, vocab_size: int, slots: int):
  @jax.jit
  def prefill(params, inputs_BS):
    encoded_BSD = decoder.apply({"params": params}, inputs_BS, method="encode")
    b = inputs_BS.shape[0]
    start_B1 = jnp.zeros((b, 1), jnp.int32)
    logits_B1V, state = decoder.apply(
        {"params": params}, start_B1, start_B1, _step_mask(jnp.zeros((b,), jnp.int32), slots),
        encoded_BSD, inputs_BS, method="decode", mutable=["cache"])
    return logits_B1V[:, 0], state["cache"]

  def step(params, cache, token_B, positions_B, inputs_BS):
    logits_B1V, state = decoder.apply(
        {"params": params, "cache": cache}, token_B[:, None], positions_B[:, None],
        _step_mask(positions_B, slots), None, inputs_BS, method="decode", mutable=["cache"])
    return logits_B1V[:, 0], state["cache"]

  runner = _Runner(prefill, step, strategy, vocab_size)

  def run(params, inputs_BS, max_new, keep_logits, stop_at_eos=True, row_ids_B=None):
    t0 = time.perf_counter()
    logits_BV, cache = jax.block_until_ready(prefill(params, inputs_BS))
    prefill_s = time.perf_counter() - t0
    ones_B = jnp.ones((inputs_BS.shape[0],), jnp.int32)
    out = runner.loop(params, cache, logits_BV, ones_B, max_new, keep_logits, (inputs_BS,),
                      stop_at_eos, row_ids_B)
    return dataclasses.replace(out, prefill_seconds=prefill_s)

  return run
