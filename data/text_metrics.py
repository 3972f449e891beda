"""Metric functions for text-to-text tasks, in seqio's convention.

A seqio Task's `metric_fns` are called by `seqio.Evaluator` as `fn(targets, predictions)`
(lists of postprocessed strings or labels, in example order) and return {name: value};
scores on a 0-100 scale as T5 reports them. The scoring is done by the field's maintained
libraries: `rouge-score` (Google's ROUGE, as T5), `sacrebleu` (BLEU with its standard
tokenization, as T5), scikit-learn (F1, Matthews correlation) and scipy (Pearson,
Spearman). They are the optional extra `objectax[eval]`, imported only when a metric is
computed, never by training; a missing one is a one-line error naming the package.
"""
from __future__ import annotations

import collections
import importlib
import re
import string
from typing import Sequence

from objectax.models.registry import ConfigError

# metric -> (module imported, pip package)
PACKAGES = {
    "rouge": ("rouge_score.rouge_scorer", "rouge-score"),
    "bleu": ("sacrebleu", "sacrebleu"),
    "f1": ("sklearn.metrics", "scikit-learn"),
    "mcc": ("sklearn.metrics", "scikit-learn"),
    "pearson": ("scipy.stats", "scipy"),
    "spearman": ("scipy.stats", "scipy"),
}


def require(metric: str):
  """The module a metric computes with; ConfigError in one line when it is missing."""
  module, package = PACKAGES[metric]
  try:
    return importlib.import_module(module)
  except ImportError:
    raise ConfigError(
        f"metric {metric!r} needs the package {package!r}, which is not installed: "
        f"pip install {package} (or pip install 'objectax[eval]')") from None


def check_available(metric_fns) -> None:
  """Fails in one line, before any decoding, when a task's metric lacks its package."""
  for fn in metric_fns:
    metric = getattr(fn, "needs", None)
    if metric:
      require(metric)


def _needs(metric: str):
  def mark(fn):
    fn.needs = metric
    return fn
  return mark


def _check(targets: Sequence, predictions: Sequence) -> None:
  if len(targets) != len(predictions):
    raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")


def exact_match(targets: Sequence[str], predictions: Sequence[str]) -> dict:
  """Percent of predictions equal to their target (strings compared as they are)."""
  _check(targets, predictions)
  hits = sum(str(t) == str(p) for t, p in zip(targets, predictions))
  return {"exact_match": 100.0 * hits / max(len(targets), 1)}


def accuracy(targets: Sequence, predictions: Sequence) -> dict:
  """Percent of predicted labels equal to their target label."""
  _check(targets, predictions)
  hits = sum(t == p for t, p in zip(targets, predictions))
  return {"accuracy": 100.0 * hits / max(len(targets), 1)}


@_needs("rouge")
def rouge(targets: Sequence[str], predictions: Sequence[str]) -> dict:
  """Mean ROUGE-1, ROUGE-2 and ROUGE-Lsum F-measures (stemmed), as T5 reports them."""
  _check(targets, predictions)
  scorer_lib = require("rouge")
  scorer = scorer_lib.RougeScorer(["rouge1", "rouge2", "rougeLsum"], use_stemmer=True)
  totals = collections.Counter()
  for t, p in zip(targets, predictions):
    # rougeLsum splits summaries on newlines: one sentence per line, as T5 prepares them.
    scores = scorer.score(_sentences(t), _sentences(p))
    for k, v in scores.items():
      totals[k] += v.fmeasure
  n = max(len(targets), 1)
  return {k: 100.0 * totals[k] / n for k in ("rouge1", "rouge2", "rougeLsum")}


@_needs("rouge")
def rouge_l(targets: Sequence[str], predictions: Sequence[str]) -> dict:
  """Mean ROUGE-L F-measure (stemmed), for one-line targets."""
  _check(targets, predictions)
  scorer = require("rouge").RougeScorer(["rougeL"], use_stemmer=True)
  total = sum(scorer.score(t, p)["rougeL"].fmeasure for t, p in zip(targets, predictions))
  return {"rougeL": 100.0 * total / max(len(targets), 1)}


def _sentences(text: str) -> str:
  return "\n".join(s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s)


@_needs("bleu")
def bleu(targets: Sequence[str], predictions: Sequence[str]) -> dict:
  """Corpus BLEU with sacrebleu's defaults ("13a" tokenization, exponential smoothing)."""
  _check(targets, predictions)
  sacrebleu = require("bleu")
  return {"bleu": sacrebleu.corpus_bleu(list(predictions), [list(targets)]).score}


def _normalize_answer(text: str) -> str:
  """SQuAD's answer normalization: lower case, no punctuation, articles or extra spaces."""
  text = text.lower()
  text = "".join(ch for ch in text if ch not in set(string.punctuation))
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


def _token_f1(target: str, prediction: str) -> float:
  t, p = _normalize_answer(target).split(), _normalize_answer(prediction).split()
  common = collections.Counter(t) & collections.Counter(p)
  same = sum(common.values())
  if not t or not p:
    return float(t == p)
  if same == 0:
    return 0.0
  precision, recall = same / len(p), same / len(t)
  return 2 * precision * recall / (precision + recall)


def squad(targets: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict:
  """SQuAD v1.1's exact match and token F1, each the best over an example's answers."""
  _check(targets, predictions)
  em = f1 = 0.0
  for answers, p in zip(targets, predictions):
    answers = [answers] if isinstance(answers, str) else list(answers)
    em += max(float(_normalize_answer(a) == _normalize_answer(p)) for a in answers)
    f1 += max(_token_f1(a, p) for a in answers)
  n = max(len(targets), 1)
  return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n}


@_needs("f1")
def f1_binary(targets: Sequence, predictions: Sequence) -> dict:
  """F1 of the positive class (label 1), as GLUE's MRPC and QQP report it."""
  _check(targets, predictions)
  return {"f1": 100.0 * require("f1").f1_score(targets, predictions, pos_label=1,
                                                 zero_division=0)}


@_needs("f1")
def f1_macro(targets: Sequence, predictions: Sequence) -> dict:
  """F1 averaged over the classes (SuperGLUE's CB)."""
  _check(targets, predictions)
  return {"f1_macro": 100.0 * require("f1").f1_score(targets, predictions, average="macro",
                                                       zero_division=0)}


@_needs("mcc")
def matthews_corrcoef(targets: Sequence, predictions: Sequence) -> dict:
  """Matthews correlation (GLUE's CoLA), x 100."""
  _check(targets, predictions)
  return {"matthews_corrcoef": 100.0 * require("mcc").matthews_corrcoef(targets, predictions)}


@_needs("pearson")
def pearson(targets: Sequence[float], predictions: Sequence[float]) -> dict:
  _check(targets, predictions)
  return {"pearson": 100.0 * float(require("pearson").pearsonr(targets, predictions)[0])}


@_needs("spearman")
def spearman(targets: Sequence[float], predictions: Sequence[float]) -> dict:
  _check(targets, predictions)
  return {"spearman": 100.0 * float(require("spearman").spearmanr(targets, predictions)[0])}


def mean_log_likelihood(targets: Sequence, scores: Sequence[float]) -> dict:
  """A score metric: the mean log-likelihood of the targets (nats per example)."""
  del targets
  return {"log_likelihood": float(sum(scores) / max(len(scores), 1))}
