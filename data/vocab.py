"""Vocabularies, chosen by gin: a SentencePiece model (given, or trained here) or raw bytes.

With no model given, a unigram SentencePiece model is trained on the train split of the
embedded corpus (`objectax.data.pydocs`) and cached beside its TFDS files, so a laptop with
no network gets a real subword vocabulary in a couple of seconds. Ids follow T5: pad=0,
eos=1, unk=2, no bos; then the UL2 paradigm tokens [NLU], [NLG], [S2S] (Tay et al.
2022; docs/objectives.md#ul2) as single pieces, ids 3, 4, 5; then 256
byte-fallback pieces and the learned pieces. seqio appends `extra_ids` sentinels at the
TOP of the id space, `<extra_id_0>` = vocab_size - 1, counting down (T5's convention;
docs/objectives.md#sentinel-ids).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
from typing import Callable, Iterable, Optional

from etils import epath
import gin
import seqio
import sentencepiece as spm

from objectax.data import pydocs
# UL2's mode tokens are trained into the SentencePiece model as whole pieces.
from objectax.objectives.ul2 import MODE_TOKENS, mode_token_ids  # pylint: disable=unused-import
from objectax.models.registry import ConfigError, Registry

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2  # T5's convention; seqio assumes pad 0 and eos 1

# One input "sentence" per paragraph: SentencePiece silently skips sentences longer than
# max_sentence_length bytes, and the corpus's longest paragraph is about 4.7 kB.
_MAX_SENTENCE_BYTES = 1 << 14
# Enough for the whole embedded corpus (~16k paragraphs) while bounding the cost on a
# user-supplied big corpus; taken in order (no sampling), so training stays deterministic.
_INPUT_SENTENCE_CAP = 1_000_000
_SEED = 0


@gin.configurable
@dataclasses.dataclass(frozen=True)
class VocabConfig:
  """Which vocabulary to use.

  Attributes:
    kind: "sentencepiece" or "byte".
    sentencepiece_model: path of a SentencePiece model; "" trains one on the embedded
      corpus (cached beside its TFDS files).
    vocab_size: pieces in the trained SentencePiece model, before the extra ids.
    extra_ids: sentinel ids appended at the top of the vocabulary (T5 uses 100).
  """
  kind: str = "sentencepiece"
  sentencepiece_model: str = ""
  vocab_size: int = 8000
  extra_ids: int = 100


def spm_model_path(data_dir: str | None = None, vocab_size: int = 8000) -> str:
  """Where the trained model is cached: next to the corpus's TFDS files."""
  return os.path.join(pydocs.dataset_dir(data_dir), f"spm_unigram_{vocab_size}.model")


def train_sentencepiece_on_texts(texts: Iterable[str], vocab_size: int, path: str) -> str:
  """Trains a unigram model on `texts` (one paragraph per line) and writes it atomically.

  Deterministic: fixed input order, no input sampling, a fixed seed and one thread (two
  threads were measured to give different bytes, and to be slower on this corpus).
  """
  sentences = (line for text in texts for line in text.split("\n") if line.strip())
  spm.set_random_generator_seed(_SEED)
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences,
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size,
        pad_id=PAD_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        bos_id=-1,
        # "▁[NLU]", with the word-boundary mark, as seqio does for "▁<extra_id_0>": the
        # dummy prefix makes encode("[NLU]") one id, not "▁" + "[NLU]".
        user_defined_symbols=[f"\u2581{m}" for m in MODE_TOKENS],
        # Unseen characters (other scripts in c4/wikipedia) become UTF-8 byte pieces
        # instead of <unk>, so decode(encode(x)) == x for any text; costs 256 ids.
        byte_fallback=True,
        input_sentence_size=_INPUT_SENTENCE_CAP,
        shuffle_input_sentence=False,
        max_sentence_length=_MAX_SENTENCE_BYTES,
        num_threads=1,
        minloglevel=2,
    )
  except RuntimeError as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ConfigError(
        f"SentencePiece training failed for VocabConfig.vocab_size={vocab_size}: {first}"
    ) from None
  target = epath.Path(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = target.parent / f".{target.name}.tmp{os.getpid()}"
  tmp.write_bytes(model.getvalue())
  tmp.replace(target)  # atomic: a reader sees the old file or the new one, never half
  return os.fspath(target)


def train_sentencepiece(data_dir: str | None = None, vocab_size: int = 8000) -> str:
  """The path of a unigram model trained on the embedded corpus's TRAIN split (cached).

  Builds the corpus if needed; trains only when the cached model is missing. Processes
  that race (one per GPU on a host) serialize on a lock file: one trains, the others wait
  and reuse its model. On remote dirs (no lock) each may train; the atomic write keeps the
  file whole, and training is deterministic, so they write the same bytes.
  """
  data_dir = pydocs.ensure_built(data_dir)
  path = spm_model_path(data_dir, vocab_size)
  if epath.Path(path).exists():
    return path
  with pydocs.file_lock(data_dir, f"{pydocs.CONFIG_NAME}.spm_unigram_{vocab_size}"):
    if epath.Path(path).exists():  # another process trained it while we waited
      return path
    return _train_on_corpus(data_dir, vocab_size, path)


def _train_on_corpus(data_dir: str, vocab_size: int, path: str) -> str:
  """Trains on the embedded corpus's train split, read from its TFDS files."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(pydocs.TFDS_NAME, data_dir=data_dir)
  examples = tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False))
  # Sorted by id: the input order must not depend on how TFDS laid out the records.
  docs = sorted((ex["id"].decode(), ex["text"].decode()) for ex in examples)
  print(
      f"training a SentencePiece unigram model ({vocab_size} pieces) on the "
      f"{len(docs)} train documents of {pydocs.TFDS_NAME} -> {path}",
      flush=True,
  )
  return train_sentencepiece_on_texts((t for _, t in docs), vocab_size, path)


@functools.lru_cache(maxsize=None)
def _sentencepiece(path: str, extra_ids: int) -> seqio.SentencePieceVocabulary:
  return seqio.SentencePieceVocabulary(path, extra_ids=extra_ids)


class _TrainedOnFirstUse(seqio.SentencePieceVocabulary):
  """The default vocabulary, whose model is trained (or found in its cache) only when it
  is first used, so a task can be registered with it at import time for free."""

  def __init__(self, vocab_size: int, extra_ids: int):
    super().__init__("", extra_ids=extra_ids)
    self._pieces = vocab_size

  def _model_context(self):
    if not self._sentencepiece_model_file:
      self._sentencepiece_model_file = train_sentencepiece(None, self._pieces)
    return super()._model_context()

  @property
  def sentencepiece_model_file(self) -> str:
    self._model_context()
    return self._sentencepiece_model_file


@functools.lru_cache(maxsize=None)
def default_vocabulary() -> seqio.Vocabulary:
  """The vocabulary of `VocabConfig()`'s defaults: the SentencePiece model trained on the
  embedded corpus, with 100 sentinels and the UL2 mode tokens. For a user's own seqio Task
  (`seqio.Feature(default_vocabulary())`), so it can be mixed with the built-in tasks.
  Nothing is trained or read until it is first used."""
  defaults = {f.name: f.default for f in dataclasses.fields(VocabConfig)}
  return _TrainedOnFirstUse(defaults["vocab_size"], defaults["extra_ids"])


def _make_sentencepiece(cfg: VocabConfig, data_dir: Optional[str]) -> seqio.Vocabulary:
  if cfg.sentencepiece_model:
    if not epath.Path(cfg.sentencepiece_model).exists():
      raise ConfigError(
          f"VocabConfig.sentencepiece_model: no file at {cfg.sentencepiece_model!r} "
          "(leave it empty to train one on the embedded corpus)"
      )
    path = cfg.sentencepiece_model
  else:
    path = train_sentencepiece(data_dir, cfg.vocab_size)
  return _sentencepiece(os.fspath(path), cfg.extra_ids)


def _make_byte(cfg: VocabConfig, data_dir: Optional[str]) -> seqio.Vocabulary:
  del data_dir
  return seqio.ByteVocabulary(extra_ids=cfg.extra_ids)


VOCABULARIES = Registry[Callable[[VocabConfig, Optional[str]], seqio.Vocabulary]](
    "vocabulary kind")
VOCABULARIES.add("sentencepiece", _make_sentencepiece)
VOCABULARIES.add("byte", _make_byte)


def fingerprint(vocabulary: seqio.Vocabulary) -> str:
  """What fixes a vocabulary's ids, as a short string a checkpoint records: the kind, a hash
  of a SentencePiece model's bytes (not its path, which may move), and the sentinels."""
  extra = getattr(vocabulary, "extra_ids", 0)
  if isinstance(vocabulary, seqio.SentencePieceVocabulary):
    digest = hashlib.sha256(vocabulary.sp_model).hexdigest()[:16]
    return f"sentencepiece:{digest}+{extra}"
  return f"{type(vocabulary).__name__}+{extra}"


def get_vocabulary(
    cfg: VocabConfig | None = None, data_dir: str | None = None
) -> seqio.Vocabulary:
  """The vocabulary `cfg` names (default: the gin-bound `VocabConfig()`)."""
  cfg = cfg if cfg is not None else VocabConfig()
  return VOCABULARIES.get(cfg.kind)(cfg, data_dir)
