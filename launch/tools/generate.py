"""`objectax generate --workdir=DIR`: continue prompts, or fill blanks, with a trained run.

The run's own architecture decodes with its cache (models/decoding.py), on the run's mesh
with its parameter shardings, from the latest checkpoint (or --step):

- a prompt is continued: the causal and prefix decoders read `[0] + prompt` as training's
  shifted inputs begin (the prefix decoder bidirectionally over it), the encoder-decoder
  reads the prompt (+ EOS) in its encoder and decodes from 0;
- `--infill "Thank you <X> me to your party <Y> week."`: each marker (`<X>`, `<Y>`, ... or
  `<extra_id_N>`) becomes the sentinel of a noise span, as span corruption writes its
  inputs; the model's targets (`<extra_id_0> span <extra_id_1> span ...`) are put back in
  place of the markers. The encoder-only model predicts each marker's one token in one
  pass (argmax), as BERT MLM trains it;
- `--mode NLU|NLG|S2S` (UL2 runs) prepends the mode token as training does.
"""
from __future__ import annotations

import dataclasses
import re
import sys
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from objectax.data import vocab as vocab_lib
from objectax.launch import builder, input_pipeline, sharding
from objectax.launch.eval import evaluate
from objectax.models import decoding
from objectax.models.registry import ConfigError
from objectax.objectives import registry as objective_registry

EOS_ID = decoding.EOS_ID
MARKER = re.compile(r"<([A-Z])>|<extra_id_(\d+)>")
MODES = ("NLU", "NLG", "S2S")


@dataclasses.dataclass(frozen=True)
class Request:
  """What to generate. `infill`: the prompts are texts with markers to fill."""
  prompts: tuple[str, ...]
  max_new_tokens: int = 64
  strategy: decoding.Strategy = decoding.Strategy()
  infill: bool = False
  mode: str = ""


def split_markers(text: str) -> tuple[list[str], list[int]]:
  """The text between markers, and each marker's span number (<X> = 0, <Y> = 1, ...;
  <extra_id_N> = N): "a <X> b <Y>" -> (["a ", " b ", ""], [0, 1])."""
  pieces, spans, start = [], [], 0
  for m in MARKER.finditer(text):
    pieces.append(text[start:m.start()])
    spans.append(ord(m.group(1)) - ord("X") if m.group(1) else int(m.group(2)))
    start = m.end()
  pieces.append(text[start:])
  if any(s < 0 for s in spans):  # <A> ... <W>: letters before X
    raise ConfigError(f"--infill markers are <X>, <Y>, <Z> (then <extra_id_3>, ...) or "
                      f"<extra_id_N>; got {MARKER.findall(text)} in {text!r}")
  return pieces, spans


def _sentinel(vocabulary, span: int) -> int:
  return vocabulary.vocab_size - 1 - span


def infill_ids(vocabulary, text: str) -> tuple[list[int], list[int]]:
  """The inputs of span corruption for `text` (sentinels for markers, then EOS) and the
  span numbers in order."""
  pieces, spans = split_markers(text)
  if not spans:
    raise ConfigError(f"--infill needs at least one marker (<X>, <Y>, ... or <extra_id_N>) "
                      f"in {text!r}")
  ids: list[int] = []
  for piece, span in zip(pieces, [*spans, None]):
    if piece.strip():
      ids += vocabulary.encode(piece.strip())
    if span is not None:
      ids.append(_sentinel(vocabulary, span))
  return ids + [EOS_ID], spans


def fill(vocabulary, text: str, target_ids: Sequence[int]) -> str:
  """`text` with each marker replaced by the span the targets give it (`[?]` if none)."""
  pieces, spans = split_markers(text)
  found: dict[int, list[int]] = {}
  current = None
  for i in target_ids:
    if i == EOS_ID:
      break
    span = vocabulary.vocab_size - 1 - i
    if 0 <= span < getattr(vocabulary, "extra_ids", 0):
      current = span
      found.setdefault(span, [])
    elif current is not None:
      found[current].append(i)
  out = pieces[0]
  for span, piece in zip(spans, pieces[1:]):
    words = vocabulary.decode(found[span]).strip() if found.get(span) else "[?]"
    out = out.rstrip() + " " + words + " " + piece.lstrip()
  return out.strip()


def _check(cfg, request: Request, model) -> None:
  """One-line refusals, before anything is restored or compiled."""
  objective = cfg.exp.trains_on
  one_pass = not decoding.can_decode(model)  # the encoder-only model
  if request.infill and not cfg.exp.task and not cfg.objective.fills_spans and not one_pass:
    filling = [n for n in objective_registry.OBJECTIVES.names()
               if objective_registry.get(n).fills_spans]
    raise ConfigError(f"--infill needs a model trained to fill sentinel spans; this run's "
                      f"objective {objective!r} has none (valid: {', '.join(filling)})")
  if request.mode and not hasattr(cfg.objective_cfg, "mode_token_length"):
    raise ConfigError(f"--mode applies to runs trained with mode tokens (UL2); this run's "
                      f"objective is {objective!r}")
  if request.mode and request.mode not in MODES:
    raise ConfigError(f"--mode {request.mode!r}; valid choices: {', '.join(MODES)}")
  if one_pass and not request.infill:
    raise ConfigError(f"{cfg.arch.name} predicts masked positions in one pass and cannot "
                      "continue a prompt; use --infill \"text with <X> blanks\"")
  if one_pass and request.strategy != decoding.Strategy():
    raise ConfigError("the encoder-only model fills each blank with its argmax in one pass; "
                      "drop --temperature/--top_k/--top_p/--beams")
  if request.max_new_tokens < 1:
    raise ConfigError(f"--max_new_tokens {request.max_new_tokens} must be >= 1")
  if not request.prompts:
    raise ConfigError("nothing to generate from: give --prompt TEXT, --prompts_file FILE, "
                      "--infill TEXT or prompts on stdin")


@dataclasses.dataclass
class Opened:
  """A training run ready to decode: its config, checkpoint step, vocabulary, model and
  the length of each of its model streams; parameters not yet restored."""
  cfg: Any
  step: int
  vocabulary: Any
  parts: Any
  model: Any

  @property
  def budget(self) -> dict[str, int]:
    return self.parts.model_lengths

  @property
  def stream(self) -> str:
    """The stream a prompt goes into: "encoder" (ED, EO) or "decoder" (CD, ND)."""
    return "encoder" if "encoder" in self.budget else "decoder"


def open_for_decoding(workdir: str, step: Optional[int], bindings: Sequence[str] = ()) -> Opened:
  """The run of `workdir` (its latest checkpoint, or `step`), built but not restored."""
  cfg, chosen = evaluate.open_run(workdir, step, bindings)
  vocabulary = input_pipeline.run_vocabulary(cfg)
  lengths = cfg.task_lengths()
  parts = builder.build(cfg, vocab_size=vocabulary.vocab_size, extra_ids=vocabulary.extra_ids,
                        feature_lengths=lengths.feature_lengths(), concat=lengths.concat,
                        batch_size=1)
  return Opened(cfg, chosen, vocabulary, parts, parts.scoring_model())


class Decoder:
  """The restored run on its mesh: decodes batches of rows (ids) with its strategy. The
  rows are split over the data-parallel devices, so a batch is padded to a multiple of
  their number with copies of its first row (dropped from the result)."""

  def __init__(self, opened: Opened, run, params):
    self.opened, self.run, self.params = opened, run, params
    self.dp = sharding.data_parallel_size(self.run.mesh.shape, opened.cfg.mesh)

  @classmethod
  def restore(cls, opened: Opened, workdir: str) -> "Decoder":
    """The checkpoint `opened.step` of `workdir`, on the run's mesh and shardings."""
    run = opened.parts.on_mesh(sharding.make_mesh(opened.cfg.mesh))
    return cls(opened, run, evaluate.restore_params(workdir, opened.step, run.abstract))

  def describe(self, what: str) -> str:
    o = self.opened
    return (f"{o.cfg.exp.name} step {o.step}: {what}, {o.cfg.arch.name}, mesh "
            f"{dict(self.run.mesh.shape)} on {jax.device_count()} device(s)")

  def decode(self, rows: Sequence[Sequence[int]], max_new_tokens: int,
             strategy: decoding.Strategy, row_ids: Optional[Sequence[int]] = None,
             width: int = 0, pad_to: int = 0) -> list[list[int]]:
    """Each row's output ids; `pad_to`: pad the batch to this many rows (fixed shapes)."""
    wanted = len(rows)
    ids = list(range(wanted)) if row_ids is None else list(row_ids)
    extra = max(pad_to - wanted, 0)
    extra += -(wanted + extra) % self.dp
    rows, ids = list(rows) + [rows[0]] * extra, ids + [ids[0]] * extra
    model, vocabulary = self.opened.model, self.opened.vocabulary
    with self.run.activate():
      if not decoding.can_decode(model):
        outputs = _fill_in_one_pass(model, self.params, rows, vocabulary)
      else:
        outputs = decoding.generate(model, self.params, rows, max_new_tokens=max_new_tokens,
                                    strategy=strategy, vocab_size=vocabulary.vocab_size,
                                    row_ids=ids, width=width).tokens
    return outputs[:wanted]


def generate(workdir: str, step: Optional[int], request: Request,
             bindings: Sequence[str] = (), say=None) -> list[tuple[str, str]]:
  """[(prompt, output text)] of each prompt."""
  say = say or (lambda msg: print(f"objectax generate: {msg}", file=sys.stderr, flush=True))
  opened = open_for_decoding(workdir, step, bindings)
  cfg, vocabulary, model, budget = opened.cfg, opened.vocabulary, opened.model, opened.budget
  _check(cfg, request, model)
  prefix = (list(vocab_lib.mode_token_ids(vocabulary, f"[{request.mode}]"))
            if request.mode else [])
  rows = []
  for text in request.prompts:
    if request.infill:
      ids, _ = infill_ids(vocabulary, text)
    else:
      ids = list(vocabulary.encode(text))
      if decoding.reads_inputs_apart(model):  # encoder inputs end with EOS, as in training
        ids.append(EOS_ID)
    rows.append(prefix + ids)
  stream = opened.stream
  longest = max(len(r) + (stream == "decoder") for r in rows)
  if longest > budget[stream]:
    raise ConfigError(f"a prompt is {longest} tokens, longer than the run's {stream} length "
                      f"{budget[stream]} (Experiment.sequence_length {cfg.exp.sequence_length})")
  new = request.max_new_tokens
  room = budget.get("decoder", 0) - (longest if stream == "decoder" else 0)
  if decoding.can_decode(model) and new > room:
    say(f"--max_new_tokens {new} capped at {room}: the run's decoder length is "
        f"{budget['decoder']}")
    new = room
  decoder = Decoder.restore(opened, workdir)
  say(decoder.describe(f"{len(rows)} prompt(s)"))
  outputs = decoder.decode(rows, new, request.strategy)
  results = []
  for text, out in zip(request.prompts, outputs):
    if request.infill:
      results.append((text, fill(vocabulary, text, out)))
    else:
      results.append((text, vocabulary.decode([i for i in out if i != EOS_ID])))
  return results


def _fill_in_one_pass(model, params, rows, vocabulary) -> list[list[int]]:
  """Encoder-only: each sentinel position's argmax, as targets `<extra_id_n> token ...`."""
  width = max(len(r) for r in rows)
  tokens_BL = np.zeros((len(rows), width), np.int32)
  for i, r in enumerate(rows):
    tokens_BL[i, :len(r)] = r
  logits = model.apply({"params": params}, {"encoder_input_tokens": jnp.asarray(tokens_BL)})
  best_BL = np.asarray(jnp.argmax(logits[..., :vocabulary.vocab_size], axis=-1))
  first = vocabulary.vocab_size - vocabulary.extra_ids
  out = []
  for i, r in enumerate(rows):
    ids = []
    for pos, token in enumerate(r):
      if token >= first:
        ids += [token, int(best_BL[i, pos])]
    out.append(ids + [EOS_ID])
  return out


def run(workdir: Optional[str], step: Optional[int], prompts: Sequence[str],
        prompts_file: Optional[str], infill: Sequence[str], bindings: Sequence[str],
        max_new_tokens: int, strategy: decoding.Strategy, mode: str) -> None:
  """The command: prints each prompt and its output."""
  if not workdir:
    raise ConfigError("objectax generate needs --workdir=DIR (the workdir of a training run)")
  texts = list(prompts)
  if prompts_file:
    try:
      with open(prompts_file, encoding="utf-8") as f:
        texts += [line.rstrip("\n") for line in f if line.strip()]
    except OSError as e:
      raise ConfigError(f"--prompts_file {prompts_file}: {e.strerror}") from None
  if infill and texts:
    raise ConfigError("give either prompts to continue or --infill texts, not both")
  if not texts and not infill and not sys.stdin.isatty():
    texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
  request = Request(tuple(infill or texts), max_new_tokens, strategy, bool(infill), mode)
  for prompt, output in generate(workdir, step, request, bindings):
    print(f"prompt: {prompt}")
    print(f"output: {output}")
    print()
