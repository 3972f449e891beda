"""`objectax vocab train`: a SentencePiece model trained on the configured corpus.

    objectax vocab train --out my.model --gin.Experiment.corpus=local \
        --gin.LocalTextConfig.train_glob=/data/*.jsonl [--gin.VocabConfig.vocab_size=32000]

The same recipe as the default vocabulary (data/vocab.py: unigram, T5 ids pad 0 / EOS 1 /
unk 2, the UL2 mode tokens as single pieces, byte fallback, deterministic), on the train
split of `Experiment.corpus`; seqio adds `VocabConfig.extra_ids` sentinels on top when the
model is used. Train with it: `--gin.VocabConfig.sentencepiece_model=my.model`; the run's
checkpoints record the vocabulary's fingerprint, so a resume with another one is refused.
"""
from __future__ import annotations

import os
import time

from objectax.data import sources
from objectax.data import vocab as vocab_lib
from objectax.launch import builder
from objectax.models.registry import ConfigError


def run(out: str, max_documents: int = 0) -> str:
  """Trains on the configured corpus's train split (at most `max_documents`, 0 = all) and
  writes the model to `out`; returns its path."""
  if not out:
    raise ConfigError("objectax vocab train needs --out=PATH, where the model is written")
  if max_documents < 0:
    raise ConfigError(f"--max_documents={max_documents} must be >= 0 (0 = every document)")
  cfg = builder.resolve()
  corpus = sources.get_corpus(cfg.exp.corpus)
  if corpus.kind != "text":
    raise ConfigError(f"corpus {corpus.name!r} holds {corpus.kind} examples, not documents; "
                      "train a vocabulary on a text corpus (Experiment.corpus)")
  corpus.prepare(cfg.data)
  dataset = corpus.make_source(cfg.data).get_dataset(split="train", shuffle=False)
  read = [0]

  def texts():
    for example in dataset.as_numpy_iterator():
      if max_documents and read[0] >= max_documents:
        return
      read[0] += 1
      yield example[corpus.text_key].decode("utf-8")

  t = time.perf_counter()
  print(f"objectax: training a SentencePiece unigram model ({cfg.vocab.vocab_size} pieces) on "
        f"the train split of corpus {corpus.name!r} -> {out}", flush=True)
  path = vocab_lib.train_sentencepiece_on_texts(texts(), cfg.vocab.vocab_size,
                                                os.path.abspath(out))
  print(f"objectax: wrote {path} from {read[0]} documents in {time.perf_counter() - t:.1f} s; "
        f"train with --gin.VocabConfig.sentencepiece_model={path}", flush=True)
  return path
