"""The EleutherAI lm-evaluation-harness reads an Objectax run: `--model objectax`.

Wang et al. 2022 report EAI-Eval beside T0-Eval, the EAI harness's tasks and prompts;
`objectax eval` reproduces their rank classification on its own tasks, and this adapter
lets the harness itself (hundreds of tasks, its metrics, its few-shot machinery) score
any run, every architecture in its OWN layout, so that runs without a Hugging Face twin
(the prefix decoder, the encoder-only model) are evaluated by the same harness:

    objectax harness --model objectax --model_args workdir=DIR,batch_size=16 --tasks T

(lm-eval 0.4 finds models only in its own registry, with no entry-point discovery, so
`objectax harness` imports this module, which registers "objectax", and then runs the
harness's own command line with the same arguments). From Python:

    import objectax.launch.interop.lm_eval_adapter  # registers "objectax"
    lm_eval.simple_evaluate(model="objectax", model_args={"workdir": DIR}, tasks=[...])

model_args: workdir (required), step (default: the latest checkpoint), batch_size (rows
per jitted call, default 16; the harness's own --batch_size applies when model_args has
none; "auto" means the default), max_gen_toks (default 256).

The three requests, with the scorer and layouts of `objectax eval` (launch/eval/zeroshot.py,
launch/eval/yardstick.py, each architecture's `score_layout`):

- loglikelihood(context, continuation): log p(continuation | context), summed, in the
  architecture's layout: CD one causal stream (context + continuation, loss on the
  continuation); ND the context bidirectional, the continuation causal; ED the context in
  the encoder, the continuation as decoder targets; EO the context, one mask id per
  continuation token and EOS, all masked at once (zeroshot.py's approximation). The
  harness puts the space between them at the start of the continuation (target_delimiter
  " "); such a continuation is read as a new word and tokenized apart from the context,
  exactly as `objectax eval` tokenizes an option, so the two agree example by example.
  Any other continuation (no leading space, e.g. after "(") is split off the tokenized
  whole text, as the harness's own models do. A context too long keeps its last tokens.
  is_greedy: every continuation token is the argmax over the vocabulary.
- loglikelihood_rolling(text): the whole text's log-likelihood, every token scored once.
  CD/ND: windows of the run's sequence length L, the first one the text's first L tokens
  after BOS (the yardstick's left_to_right row); each later one predicts the next L - 1
  tokens given the one token before them, the last with the context that fills its row
  (the harness's rolling windows, BOS counted in the row). ED: the decoder predicts L
  tokens at a time given the L tokens before them in the encoder (its prefix-LM layout);
  the first window's encoder reads one EOS (an empty input, the yardstick's left_to_right
  row). EO: refused in one line; masked models have no left-to-right factorisation.
- generate_until(context, gen_kwargs): decoding through the run's own cache (models/
  decoding.py, as `objectax generate`): greedy unless gen_kwargs asks for sampling
  (do_sample with a temperature); max_gen_toks new tokens at most; the text cut at the
  first EOS and at the first of the `until` strings. The context keeps its last tokens
  when prompt and new tokens exceed the run's length. EO: refused in one line.

Requests are sorted by length and scored batch_size rows per jitted call, in rows rounded
up to a multiple of 32 tokens, so that a task compiles only a few shapes.
"""
from __future__ import annotations

import sys
from typing import Any, Optional, Sequence

import numpy as np

try:
  # The harness's own models first: its registry fills itself with them only while empty,
  # so registering "objectax" before would hide `--model hf` and the rest.
  import lm_eval.models  # pylint: disable=unused-import
  from lm_eval.api.model import LM
  from lm_eval.api.registry import register_model
  from tqdm import tqdm
except ImportError as e:  # the optional `hf` extra
  raise ImportError("the lm-evaluation-harness adapter needs lm-eval: pip install -e "
                    "'.[hf]'") from e

from objectax.launch.eval import yardstick, zeroshot
from objectax.launch.tools import generate as generate_lib
from objectax.models import decoding
from objectax.models import registry as arch_registry
from objectax.models.registry import ConfigError

NAME = "objectax"
DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_GEN_TOKS = 256
ROW_MULTIPLE = zeroshot.ROW_MULTIPLE
EOS_ID = decoding.EOS_ID


def _say(msg: str) -> None:
  print(f"objectax harness: {msg}", file=sys.stderr, flush=True)


def _positive_int(name: str, value: Any, default: int) -> int:
  if value is None or value == "auto" or (isinstance(value, str) and value.startswith("auto")):
    return default
  try:
    number = int(value)
  except (TypeError, ValueError):
    number = 0
  if number < 1 or str(number) != str(value).strip():
    raise ConfigError(f"--model_args {name}={value!r} must be a positive integer")
  return number


def rolling_windows(ids: Sequence[int], length: int, shared_row: bool
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
  """(inputs, targets) windows that score every token of `ids` once (see the module
  docstring). `shared_row`: inputs and targets share one row of `length` (CD, ND);
  otherwise each has its own (ED: encoder and decoder).

  [5, 6, 7, 8, 9, 10, 11] in rows of 4, shared: ([], [5, 6, 7, 8]), ([8], [9, 10, 11]);
  apart: ([], [5, 6, 7, 8]), ([5, 6, 7, 8], [9, 10, 11]).
  """
  ids = np.asarray(ids, np.int32)
  windows, start = [], 0
  while start < len(ids):
    if shared_row:
      stop = min(start + (length if start == 0 else length - 1), len(ids))
      windows.append((ids[max(0, stop - length):start], ids[start:stop]))
    else:
      stop = min(start + length, len(ids))
      windows.append((ids[max(0, start - length):start], ids[start:stop]))
    start = stop
  return windows


@register_model(NAME)
class ObjectaxLM(LM):
  """An Objectax training run (its checkpoint restored once) as an lm-eval model."""

  def __init__(self, workdir: Optional[str] = None, step: Any = None,
               batch_size: Any = None, max_gen_toks: Any = None, **unused: Any):
    super().__init__()
    if not workdir:
      raise ConfigError("--model objectax needs --model_args workdir=DIR (the workdir of an "
                        "`objectax train` run)")
    unknown = sorted(k for k, v in unused.items()
                     if v is not None and k not in ("max_batch_size", "device"))
    if unknown:
      raise ConfigError(f"--model_args {', '.join(unknown)}: not an objectax model argument; "
                        "valid: workdir, step, batch_size, max_gen_toks")
    step = None if step in (None, "", "latest") else _positive_int("step", step, 0)
    self.workdir = str(workdir)
    self.opened = generate_lib.open_for_decoding(self.workdir, step)
    self.decoder = generate_lib.Decoder.restore(self.opened, self.workdir)
    dp = self.decoder.dp
    self.batch_size = -(-_positive_int("batch_size", batch_size, DEFAULT_BATCH_SIZE) // dp) * dp
    self.max_gen_toks = _positive_int("max_gen_toks", max_gen_toks, DEFAULT_MAX_GEN_TOKS)
    cfg = self.opened.cfg
    self.arch = cfg.exp.arch
    self.spec = arch_registry.get(self.arch)
    self.vocabulary = self.opened.vocabulary
    self.sequence_length = cfg.exp.sequence_length
    self.joins = zeroshot._joins_with_space(self.vocabulary)  # pylint: disable=protected-access
    self.scorer = yardstick.make_scorer(self.opened.model, self.spec.targets_key,
                                        greedy_vocab=self.vocabulary.vocab_size)
    _say(self.decoder.describe(f"lm-eval model, {self.batch_size} rows per batch, rows of "
                               f"{self.sequence_length} tokens"))

  # ------------------------------------------------------------------ construction

  @classmethod
  def create_from_arg_string(cls, arg_string: str, additional_config: Optional[dict] = None):
    """model_args win over the harness's own --batch_size (whose default, 1, is always
    passed), so that `--model_args workdir=DIR,batch_size=16` works as documented."""
    from lm_eval import utils  # pylint: disable=g-import-not-at-top
    return cls.create_from_arg_obj(utils.simple_parse_args_string(arg_string),
                                   additional_config)

  @classmethod
  def create_from_arg_obj(cls, arg_dict: dict, additional_config: Optional[dict] = None):
    extra = {k: v for k, v in (additional_config or {}).items()
             if v is not None and k not in arg_dict}
    return cls(**arg_dict, **extra)

  def get_model_info(self) -> dict:
    """What the harness writes into its results' config."""
    return {"objectax_workdir": self.workdir, "objectax_step": self.opened.step,
            "objectax_arch": self.arch, "objectax_experiment": self.opened.cfg.exp.name,
            "objectax_sequence_length": self.sequence_length}

  # ----------------------------------------------------------------------- scoring

  def pair(self, context: str, continuation: str) -> yardstick.Pair:
    """The scored Pair of (context, continuation), tokenized as the module docstring says."""
    spaces = len(context) - len(context.rstrip())
    if spaces:  # the harness's convention: word-boundary spaces belong to the continuation
      context, continuation = context[:-spaces], context[-spaces:] + continuation
    prompt = np.asarray(self.vocabulary.encode(context), np.int32)
    word = continuation[1:]
    if continuation[:1] == " " and word and not word[0].isspace():
      ids = zeroshot.option_ids(self.vocabulary, word, self.joins)  # as `objectax eval`
    else:
      ids = np.asarray(self.vocabulary.encode(context + continuation), np.int32)[len(prompt):]
    return zeroshot.scored_pair(self.vocabulary, prompt, ids, self.sequence_length,
                                f"the continuation {continuation[:40]!r}")

  def _row_length(self, p: yardstick.Pair) -> int:
    """Positions the architecture's layout needs for `p`, rounded up to ROW_MULTIPLE."""
    if not self.spec.left_to_right:
      used = len(p.aligned[0])
    elif self.opened.stream == "decoder":
      used = len(p.inputs) + len(p.targets)
    else:
      used = max(len(p.inputs), 1, len(p.targets))
    return min(self.sequence_length, max(ROW_MULTIPLE, -(-used // ROW_MULTIPLE) * ROW_MULTIPLE))

  def score(self, pairs: Sequence[yardstick.Pair], desc: str = "scoring",
            disable_tqdm: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(log-likelihood float64[N], is_greedy bool[N]) of the pairs' targets, longest rows
    first, batch_size rows per jitted call."""
    n = len(pairs)
    ll_N, greedy_N = np.zeros(n), np.ones(n, bool)
    lengths = [self._row_length(p) for p in pairs]
    order = sorted(range(n), key=lambda i: (-lengths[i], i))
    bar = tqdm(total=n, desc=desc, disable=disable_tqdm or self.rank != 0)
    with self.decoder.run.activate():
      for start in range(0, n, self.batch_size):
        chunk = order[start:start + self.batch_size]
        # Rows of the chunk's longest pair; the order makes that few distinct lengths.
        length = max(lengths[i] for i in chunk)
        layout = self.spec.score_layout([pairs[i] for i in chunk], length)
        ll, greedy = zeroshot.pair_log_likelihoods(
            self.scorer, self.decoder.params, layout, self.batch_size, self.decoder.run.put,
            greedy=True)
        ll_N[chunk], greedy_N[chunk] = ll, greedy
        bar.update(len(chunk))
    bar.close()
    return ll_N, greedy_N

  def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
    pairs = [self.pair(*r.args) for r in requests]
    ll_N, greedy_N = self.score(pairs, "Running loglikelihood requests", disable_tqdm)
    results = [(float(ll), bool(g)) for ll, g in zip(ll_N, greedy_N)]
    for r, result in zip(requests, results):
      self.cache_hook.add_partial("loglikelihood", r.args, result)
    return results

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    if not self.spec.left_to_right:
      raise ConfigError(f"loglikelihood_rolling (perplexity tasks): {self.arch} is a masked "
                        "model with no left-to-right factorisation; use multiple-choice "
                        "(loglikelihood) tasks")
    shared = self.opened.stream == "decoder"
    pairs, owner = [], []
    for i, r in enumerate(requests):
      ids = self.vocabulary.encode(r.args[0])
      for inputs, targets in rolling_windows(ids, self.sequence_length, shared):
        pairs.append(yardstick.Pair(inputs, targets, np.ones(len(targets), bool), 0))
        owner.append(i)
    ll_W, _ = self.score(pairs, "Running loglikelihood_rolling requests", disable_tqdm)
    totals = np.zeros(len(requests))
    np.add.at(totals, np.asarray(owner, np.int64), ll_W)
    results = [float(t) for t in totals]
    for r, result in zip(requests, results):
      self.cache_hook.add_partial("loglikelihood_rolling", r.args, result)
    return results

  # -------------------------------------------------------------------- generation

  def _strategy(self, kwargs: dict) -> decoding.Strategy:
    """Greedy unless the task samples (do_sample with a temperature > 0)."""
    temperature = float(kwargs.get("temperature") or 0.0)
    if not kwargs.get("do_sample") or temperature == 0:
      return decoding.Strategy()
    return decoding.Strategy(temperature=temperature, top_k=int(kwargs.get("top_k") or 0),
                             top_p=float(kwargs.get("top_p") or 1.0),
                             seed=int(kwargs.get("seed") or 0))

  def prompt_ids(self, context: str, max_new_tokens: int) -> tuple[list[int], int]:
    """(the prompt row `objectax generate` reads for `context`, kept to its last tokens
    when too long; the new tokens that fit)."""
    budget, stream = self.opened.budget, self.opened.stream
    ids = list(self.vocabulary.encode(context))
    if stream == "decoder":  # BOS + prompt + new tokens share the decoder's length
      new = max(1, min(max_new_tokens, budget["decoder"] - 2))
      return ids[-(budget["decoder"] - 1 - new):], new
    new = min(max_new_tokens, budget["decoder"])
    return ids[max(0, len(ids) - budget["encoder"] + 1):] + [EOS_ID], new

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    if not decoding.can_decode(self.opened.model):
      raise ConfigError(f"generate_until: {self.arch} predicts masked positions in one pass "
                        "and cannot continue a prompt; use multiple-choice tasks")
    items = []
    for i, r in enumerate(requests):
      context, gen_kwargs = r.args
      kwargs = dict(gen_kwargs or {})
      until = kwargs.pop("until", None) or []
      until = [until] if isinstance(until, str) else list(until)
      wanted = _positive_int("max_gen_toks", kwargs.pop("max_gen_toks", self.max_gen_toks),
                             self.max_gen_toks)
      row, new = self.prompt_ids(context, wanted)
      items.append((i, row, new, self._strategy(kwargs), until))
    # Longest prompts first; a batch shares its strategy and its number of new tokens.
    items.sort(key=lambda it: (repr(it[3]), it[2], -len(it[1]), it[0]))
    results: list[str] = [""] * len(items)
    bar = tqdm(total=len(items), desc="Running generate_until requests",
               disable=disable_tqdm or self.rank != 0)
    extra = self.opened.stream == "decoder"  # the BOS
    start = 0
    while start < len(items):
      stop = start
      while (stop < len(items) and stop - start < self.batch_size
             and items[stop][2:4] == items[start][2:4]):
        stop += 1
      batch = items[start:stop]
      longest = max(len(it[1]) for it in batch) + extra
      cap = self.opened.budget[self.opened.stream] if not extra else (
          self.opened.budget["decoder"] - batch[0][2])
      width = min(cap, -(-longest // ROW_MULTIPLE) * ROW_MULTIPLE)
      outputs = self.decoder.decode([it[1] for it in batch], batch[0][2], batch[0][3],
                                    row_ids=[it[0] for it in batch], width=width,
                                    pad_to=self.batch_size)
      for (i, _, _, _, until), out in zip(batch, outputs):
        ids = [int(t) for t in out]
        ids = ids[:ids.index(EOS_ID)] if EOS_ID in ids else ids
        text = self.vocabulary.decode(ids)
        for term in until:
          if term:
            text = text.split(term)[0]
        results[i] = text
        self.cache_hook.add_partial("generate_until", requests[i].args, text)
      bar.update(len(batch))
      start = stop
    bar.close()
    return results


def main(argv: Sequence[str]) -> int:
  """`objectax harness ARGS`: the harness's own command line (`lm-eval ARGS`), with the
  "objectax" model registered. A ConfigError (no workdir, EO asked to generate) in one
  line."""
  from lm_eval.__main__ import cli_evaluate  # pylint: disable=g-import-not-at-top
  saved = sys.argv
  sys.argv = ["lm-eval", *argv]
  try:
    cli_evaluate()
  except ConfigError as e:
    print(f"objectax: error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
    return 2
  except SystemExit as e:
    return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  finally:
    sys.argv = saved
  return 0
