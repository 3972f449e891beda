"""The common yardstick: every model scored on the same held-out text, in bits per byte.

Losses of different objectives measure different things, so `objectax eval` scores every
checkpoint, whatever its architecture and objective, the same ways on the same text. A
held-out sequence is a validation document truncated to the run's sequence_length.

  continuation_F  the sequence split after round(F n) of its n tokens, the continuation
                  scored given the prefix. ED: prefix -> encoder, continuation -> decoder;
                  ND: prefix bidirectional (decoder_causal_attention), then causal; CD: one
                  causal stream, loss on the continuation. No EOS at the split (Wang et
                  al. 2022's prefix LM, objectives/prefix_lm.py, adds none).
  continuation    the F rows pooled (sums of nats, tokens and bytes).
  left_to_right   every token. CD; ND with an empty prefix (= CD); ED with one EOS as
                  encoder input, what seqio's add_eos makes of an empty "inputs".
  infill_R_M      T5's random_spans_noise_mask (density R, mean span M, seeded per
                  document: every model gets the same masks) on a chunk sized so that
                  inputs + targets fit the budget. ED: span corruption (sentinels, EOS);
                  CD/ND: inputs then targets in one stream (ND bidirectional over the
                  inputs), loss on the targets; EO: every noise token replaced by the mask
                  id <extra_id_0> = vocab_size - 1 (bert_mlm's), plus EOS, scored there.

An encoder-only model has no left-to-right factorisation: its continuation and
left-to-right rows are skipped with that reason, not an error.

Bits per byte = nats over the scored tokens / ln 2 / the UTF-8 bytes they decode to,
counted in context: with offsets b[k] = len(utf8(decode(ids[:k]))), tokens [i, j) own
b[j] - b[i] bytes. Scored tokens are text only (in infilling the original span tokens, not
sentinels or EOS), so every architecture scores the same text; bits per token over all
target tokens are reported beside. The logits are training's (over the model's padded
vocabulary of V rows), so a uniform model scores log2(V) bits per token on every row.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from objectax.models import registry as arch_registry
from objectax.models.registry import ConfigError
# The scored pairs and their layouts are part of the architecture contract (models/).
from objectax.models.scoring import EOS_ID, Layout, Pair  # pylint: disable=unused-import
LN2 = math.log(2.0)
# Split points of the continuation rows, and the (density, mean span) of the infilling
# rows: T5's default span corruption (Raffel et al. 2020 sec. 3.1.4) and a long-span,
# high-density X-denoiser of UL2 (Tay et al. 2022, Table 1).
FRACTIONS = (0.25, 0.5, 0.75)
INFILLING = ((0.15, 3.0), (0.5, 32.0))
NO_LEFT_TO_RIGHT = ("an encoder-only model has no left-to-right factorisation: it cannot "
                    "score a continuation token by token")


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the yardstick scores; the defaults are the grid's fixed settings.

  Attributes:
    documents: the first N documents (of >= 2 tokens) of the validation split.
    fractions: where each sequence is split for the continuation rows.
    infilling: (noise density, mean span length) of each infilling row.
    seed: seed of the infilling noise masks (document i uses (seed, 2i) and (seed, 2i+1)).
    batch_size: rows per forward pass (rounded up to the data-parallel size).
  """
  documents: int = 64
  fractions: tuple[float, ...] = FRACTIONS
  infilling: tuple[tuple[float, float], ...] = INFILLING
  seed: int = 0
  batch_size: int = 16

  def __post_init__(self):
    if self.documents < 1:
      raise ConfigError(f"the yardstick needs >= 1 document, got {self.documents}")
    if not all(0.0 < f < 1.0 for f in self.fractions):
      raise ConfigError(f"continuation fractions must be in (0, 1), got {self.fractions}")


@dataclasses.dataclass(frozen=True)
class Document:
  """One held-out sequence: its token ids (training's tokenisation) and byte offsets."""
  text: str
  ids: np.ndarray           # int32[n]
  byte_offsets: np.ndarray  # int64[n + 1]: UTF-8 bytes of decode(ids[:k])

  def bytes_of(self, scored_n: np.ndarray) -> int:
    """UTF-8 bytes owned by the tokens flagged in bool[n] `scored_n`."""
    per_token_n = np.diff(self.byte_offsets)
    return int(per_token_n[scored_n].sum())


def byte_offsets(vocabulary: Any, ids: Sequence[int]) -> np.ndarray:
  """int64[n + 1]: offsets[k] = UTF-8 bytes of vocabulary.decode(ids[:k]).

  SentencePiece drops the leading space of the first piece and joins "▁" pieces with
  spaces, so counting in context (not piece by piece) gives each token exactly the bytes
  it adds to the decoded text. ByteVocabulary: one byte per byte id.
  """
  ids = [int(i) for i in ids]
  return np.array([len(vocabulary.decode(ids[:k]).encode("utf-8"))
                   for k in range(len(ids) + 1)], np.int64)


def make_document(vocabulary: Any, text: str, ids: Sequence[int], max_tokens: int) -> Document:
  """A held-out sequence: `ids` (the text's tokens) cut to `max_tokens`, with byte offsets."""
  ids_n = np.asarray(ids, np.int32)[:max_tokens]
  return Document(text=text, ids=ids_n, byte_offsets=byte_offsets(vocabulary, ids_n))


# ------------------------------------------------------------------------- examples


def split_point(n: int, fraction: float) -> int:
  """Prefix tokens of an n-token sequence split at `fraction`: round(f n) in [1, n - 1]."""
  return min(max(int(round(fraction * n)), 1), n - 1)


def continuation_pairs(docs: Sequence[Document], fraction: float) -> list[Pair]:
  """Prefix -> continuation, e.g. ids [5, 6, 7, 8] at 0.25: inputs [5], targets [6, 7, 8]."""
  pairs = []
  for doc in docs:
    n = len(doc.ids)
    k = split_point(n, fraction)
    pairs.append(Pair(doc.ids[:k], doc.ids[k:], np.ones(n - k, bool),
                      int(doc.byte_offsets[n] - doc.byte_offsets[k])))
  return pairs


def left_to_right_pairs(docs: Sequence[Document]) -> list[Pair]:
  """No inputs; every token a target."""
  return [Pair(doc.ids[:0], doc.ids, np.ones(len(doc.ids), bool), int(doc.byte_offsets[-1]))
          for doc in docs]


def spans_to_sentinels(tokens_L: np.ndarray, drop_L: np.ndarray,
                       vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Each run of `drop` becomes one sentinel counting down from vocab_size - 1 (T5's
  noise_span_to_unique_sentinel); also which outputs are original tokens.

  tokens [3, 4, 5, 6, 7, 8], drop [F, T, T, F, F, T], vocab 359 -> [3, 358, 6, 7, 357],
  original [T, F, T, T, F].
  """
  first_L = drop_L & ~np.r_[False, drop_L[:-1]]
  out_L = np.where(first_L, vocab_size - np.cumsum(first_L), tokens_L).astype(np.int32)
  keep_L = ~(drop_L & ~first_L)
  return out_L[keep_L], ~drop_L[keep_L]


def noise_mask(length: int, density: float, mean_span: float, seed: int, index: int) -> np.ndarray:
  """bool[length]: T5's random_spans_noise_mask (objectives/span_corruption.py, as training
  draws it) under fixed stateless seeds, so every model is scored on the same masks."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from objectax.objectives import span_corruption  # pylint: disable=g-import-not-at-top
  seeds = [tf.constant([seed, 2 * index], tf.int32), tf.constant([seed, 2 * index + 1], tf.int32)]
  return span_corruption.random_spans_noise_mask(length, density, mean_span, seeds).numpy()


def infill_raw_length(density: float, mean_span: float, budget: int) -> int:
  """Raw tokens per infilling example: the largest chunk whose inputs + targets <= budget
  (one span allowed, so that short budgets still work)."""
  from objectax.objectives import lengths  # pylint: disable=g-import-not-at-top
  return lengths.span_corruption_lengths_for_budget(budget, density, mean_span, min_spans=1)[2]


def infilling_pairs(docs: Sequence[Document], density: float, mean_span: float, raw: int,
                    vocab_size: int, seed: int) -> list[Pair]:
  """T5 span corruption of each document's first `raw` tokens, with its encoder-only form.

  `vocab_size` is the vocabulary's (sentinels count down from vocab_size - 1), not the
  model's padded table. Inputs and targets end in EOS, as span_corruption's do.
  """
  pairs = []
  for i, doc in enumerate(docs):
    tokens_L = doc.ids[:raw]
    noise_L = noise_mask(len(tokens_L), density, mean_span, seed, i)
    inputs, _ = spans_to_sentinels(tokens_L, noise_L, vocab_size)
    targets, original = spans_to_sentinels(tokens_L, ~noise_L, vocab_size)
    masked_L = np.where(noise_L, vocab_size - 1, tokens_L)
    aligned = (np.r_[masked_L, EOS_ID].astype(np.int32),
               np.r_[np.where(noise_L, tokens_L, 0), 0].astype(np.int32))
    pairs.append(Pair(np.r_[inputs, EOS_ID].astype(np.int32),
                      np.r_[targets, EOS_ID].astype(np.int32), np.r_[original, False],
                      doc.bytes_of(np.r_[noise_L, np.zeros(len(doc.ids) - len(tokens_L), bool)]),
                      aligned))
  return pairs


# -------------------------------------------------------------------------- scoring
# Each architecture lays the pairs out itself (`Architecture.score_layout`, beside its model
# in models/): (pairs, row length) -> (model features, all-target weights, scored weights),
# numpy (N, L), exactly seqio's unpacked layout for that architecture (tested against seqio).
# `Architecture.left_to_right` says whether it can score a sequence token by token.


@dataclasses.dataclass(frozen=True)
class Score:
  """One evaluation's totals; the rates are derived from them."""
  name: str
  description: str
  nats: float = 0.0            # over the scored (text) tokens
  scored_tokens: int = 0
  num_bytes: int = 0
  target_nats: float = 0.0     # over every target token (sentinels, EOS included)
  target_tokens: int = 0
  examples: int = 0
  skipped: Optional[str] = None
  # Per held-out document, in document order (the grid runner's paired bootstrap resamples
  # documents): nats over its scored tokens, and the UTF-8 bytes those tokens own.
  example_nats: tuple[float, ...] = ()
  example_bytes: tuple[int, ...] = ()

  def _ratio(self, num: float, den: float) -> float:
    return num / den if den and self.skipped is None else float("nan")

  @property
  def bits_per_token(self) -> float:
    return self._ratio(self.nats / LN2, self.scored_tokens)

  @property
  def bits_per_byte(self) -> float:
    return self._ratio(self.nats / LN2, self.num_bytes)

  @property
  def tokens_per_byte(self) -> float:
    return self._ratio(self.scored_tokens, self.num_bytes)

  @property
  def bits_per_target_token(self) -> float:
    return self._ratio(self.target_nats / LN2, self.target_tokens)

  def as_dict(self) -> dict:
    finite = lambda x: x if math.isfinite(x) else None
    return {"description": self.description, "skipped": self.skipped,
            "bits_per_byte": finite(self.bits_per_byte),
            "bits_per_token": finite(self.bits_per_token),
            "bits_per_target_token": finite(self.bits_per_target_token),
            "tokens_per_byte": finite(self.tokens_per_byte), "nats": self.nats,
            "scored_tokens": self.scored_tokens, "bytes": self.num_bytes,
            "target_nats": self.target_nats, "target_tokens": self.target_tokens,
            "examples": self.examples, "example_nats": list(self.example_nats),
            "example_bytes": list(self.example_bytes)}


def pooled(name: str, description: str, scores: Sequence[Score]) -> Score:
  """Sums of several evaluations' totals (the continuation rows at every split)."""
  skipped = next((s.skipped for s in scores if s.skipped), None)
  if skipped:
    return Score(name, description, skipped=skipped)
  total = lambda f: sum(getattr(s, f) for s in scores)
  # Per document: the rows of one document (one per split) summed, when all rows cover the
  # same documents.
  per_doc = lambda f: (tuple(map(sum, zip(*(getattr(s, f) for s in scores))))
                       if len({len(getattr(s, f)) for s in scores}) == 1 else ())
  return Score(name, description, total("nats"), total("scored_tokens"), total("num_bytes"),
               total("target_nats"), total("target_tokens"), total("examples"),
               example_nats=per_doc("example_nats"), example_bytes=per_doc("example_bytes"))


def make_scorer(model: Any, targets_key: str, greedy_vocab: int = 0
                ) -> Callable[[Any, dict], Any]:
  """Jitted (params, features) -> per-position cross-entropy in nats, float32 (N, L).

  Deterministic (no dropout); float32 logits as in training (layers.output_logits).
  `greedy_vocab` > 0: also bool (N, L), whether each target is the argmax over the first
  `greedy_vocab` ids, as greedy decoding chooses (models/decoding.py); the EAI harness
  reports it beside each log-likelihood (is_greedy). Then (cross-entropy, argmax hits).
  """
  def cross_entropy(params, features):
    logits_NLV = model.apply({"params": params}, features, deterministic=True)
    logits_NLV = logits_NLV.astype(jnp.float32)
    target_NL = features[targets_key]
    target_logit_NL = jnp.take_along_axis(logits_NLV, target_NL[..., None], axis=-1)[..., 0]
    nats_NL = jax.nn.logsumexp(logits_NLV, axis=-1) - target_logit_NL
    if not greedy_vocab:
      return nats_NL
    valid_V = jnp.arange(logits_NLV.shape[-1]) < greedy_vocab
    best_NL = jnp.argmax(jnp.where(valid_V, logits_NLV, -jnp.inf), axis=-1)
    return nats_NL, best_NL == target_NL
  return jax.jit(cross_entropy)


def score_rows(scorer: Callable, params: Any, layout: Layout, batch_size: int,
               put: Callable[[dict], dict] = lambda f: f, greedy: bool = False) -> tuple:
  """Per row, float64 (N,): (nats over the scored tokens, nats over all targets); with
  `greedy` (a scorer made with greedy_vocab) also bool (N,): every scored token the argmax.

  The last batch is filled with all-padding rows (weight 0), so every call has one shape.
  """
  features, all_NL, scored_NL = layout
  n = all_NL.shape[0]
  nats_N, target_nats_N, greedy_N = np.zeros(n), np.zeros(n), np.ones(n, bool)
  for start in range(0, n, batch_size):
    stop = min(start + batch_size, n)
    pad = ((0, batch_size - (stop - start)), (0, 0))
    batch = {k: np.pad(v[start:stop], pad) for k, v in features.items()}
    out = scorer(params, put(batch))
    ce_BL = np.asarray(out[0] if greedy else out, np.float64)[:stop - start]
    nats_N[start:stop] = (ce_BL * scored_NL[start:stop]).sum(axis=1)
    target_nats_N[start:stop] = (ce_BL * all_NL[start:stop]).sum(axis=1)
    if greedy:
      hit_BL = np.asarray(out[1])[:stop - start]
      greedy_N[start:stop] = (hit_BL | (scored_NL[start:stop] == 0)).all(axis=1)
  return (nats_N, target_nats_N, greedy_N) if greedy else (nats_N, target_nats_N)


def score_pairs(scorer: Callable, params: Any, layout: Layout, batch_size: int,
                put: Callable[[dict], dict] = lambda f: f) -> tuple[float, float]:
  """(nats over the scored tokens, nats over all targets), summed in float64 on the host."""
  nats_N, target_nats_N = score_rows(scorer, params, layout, batch_size, put)
  return float(nats_N.sum()), float(target_nats_N.sum())


def evaluate(model: Any, params: Any, arch: str, docs: Sequence[Document], *,
             vocab_size: int, sequence_length: int, settings: Settings = Settings(),
             put: Callable[[dict], dict] = lambda f: f,
             say: Callable[[str], None] = lambda msg: None) -> list[Score]:
  """Every yardstick evaluation of `model` (the plain architecture's Linen module).

  Args:
    model, params: the module and its parameters (a restored checkpoint's).
    arch: the architecture's registry name.
    docs: the held-out sequences (evaluate.held_out), at most `sequence_length` tokens each.
    vocab_size: the vocabulary's size (sentinels and the mask id count down from it).
    sequence_length: the run's token budget; every row is laid out in this many positions.
    settings: split fractions, infilling settings, seed, batch size.
    put: places a numpy batch on the devices (e.g. with the run's batch sharding).
    say: progress messages.
  """
  spec = arch_registry.get(arch)
  scorer = make_scorer(model, spec.targets_key)

  def run(name: str, description: str, make_pairs: Callable[[], list[Pair]],
          left_to_right: bool = True) -> Score:
    if left_to_right and not spec.left_to_right:
      return Score(name, description, skipped=NO_LEFT_TO_RIGHT)
    try:
      pairs = make_pairs()
    except ConfigError as e:  # a token budget too small for an infilling setting
      return Score(name, description, skipped=str(e).splitlines()[0])
    say(f"{name}: {len(pairs)} examples")
    layout = spec.score_layout(pairs, sequence_length)
    nats_N, target_nats_N = score_rows(scorer, params, layout, settings.batch_size, put)
    return Score(name, description, float(nats_N.sum()), int(layout[2].sum()),
                 sum(p.num_bytes for p in pairs), float(target_nats_N.sum()),
                 int(layout[1].sum()), len(pairs), example_nats=tuple(map(float, nats_N)),
                 example_bytes=tuple(p.num_bytes for p in pairs))

  continuations = [run(f"continuation_{round(100 * f)}", f"continuation after {f:.0%} of each "
                       "sequence", functools.partial(continuation_pairs, docs, f))
                   for f in settings.fractions]
  scores = [*continuations,
            pooled("continuation", "continuations at every split, pooled", continuations),
            run("left_to_right", "every token, left to right (ED: encoder input = EOS)",
                functools.partial(left_to_right_pairs, docs))]
  for r, mu in settings.infilling:
    make_pairs = lambda r=r, mu=mu: infilling_pairs(
        docs, r, mu, infill_raw_length(r, mu, sequence_length), vocab_size, settings.seed)
    scores.append(run(f"infill_{r:g}_{mu:g}", f"span infilling, density {r:g}, mean span "
                      f"{mu:g}", make_pairs, left_to_right=False))
  return scores


def render_table(scores: Sequence[Score]) -> str:
  """The table `objectax eval` prints."""
  lines = [f"{'evaluation':<18} {'bits/byte':>9} {'bits/token':>10} {'tokens':>8} {'bytes':>8} "
           f"{'bits/target token':>17}"]
  for s in scores:
    if s.skipped:
      lines.append(f"{s.name:<18} skipped: {s.skipped}")
    else:
      lines.append(f"{s.name:<18} {s.bits_per_byte:>9.4f} {s.bits_per_token:>10.4f} "
                   f"{s.scored_tokens:>8d} {s.num_bytes:>8d} {s.bits_per_target_token:>17.4f}")
  return "\n".join(lines)
