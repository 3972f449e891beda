"""The corpus registry: where raw text comes from, as seqio data sources.

A corpus is a name, the feature its examples carry the text under, a factory for its
`seqio.DataSource` and a `prepare` step. `data/tasks.py` registers the training tasks:
it rekeys `text_key` to "targets" and tokenizes. One corpus is not
text: `prompted` generates {"inputs", "targets"} pairs for multitask finetuning
(`Corpus.kind`), which only the `prompted` objective reads. Every corpus offers
the splits "train" and "validation" (mapped onto whatever the TFDS dataset calls them).

Nothing here downloads: TFDS sources are lazy and read-only, and `prepare` either builds
the embedded corpus (no network needed) or checks that the TFDS data is already on disk,
failing in one line that says how to get it. TFDS data live under `TfdsConfig.data_dir`,
else $TFDS_DATA_DIR, else ~/tensorflow_datasets; everything is resolved when a source is
made, so gin bindings parsed after import apply.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import threading
from typing import Callable, Mapping, Optional

import gin
import numpy as np
import seqio
import tensorflow as tf

from objectax.data import pydocs
from objectax.models.registry import ConfigError, Registry

SPLITS = ("train", "validation")


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A named text source.

  Attributes:
    name: registry name, used in task and experiment names.
    description: one line for `--help`-style listings.
    text_key: the feature that holds the document text.
    make_source: (DataConfig or None) -> the `seqio.DataSource` (splits "train" and
      "validation"); None reads the gin bindings in effect.
    prepare: (DataConfig or None) -> makes the data available (builds the embedded
      corpus) or checks that it is,
      raising `ConfigError` in one line that says how to prepare it.
    kind: "text" (documents under `text_key`, for the pretraining objectives) or
      "prompted" ({"inputs": prompt, "targets": answer} strings, for the `prompted`
      objective; `text_key` then holds prompt + " " + answer for text-reading tools).
  """
  name: str
  description: str
  text_key: str
  make_source: Callable[..., seqio.DataSource]
  prepare: Callable[..., None]
  kind: str = "text"

  def __post_init__(self):
    if self.kind not in CORPUS_KINDS:
      raise ValueError(f"corpus {self.name!r}: kind {self.kind!r} not in {CORPUS_KINDS}")


CORPUS_KINDS = ("text", "prompted")


# Bound in gin as TfdsConfig.data_dir; it lives with the embedded corpus, the lowest layer,
# so that the corpus, the vocabulary cached beside it and every TFDS source agree.
TfdsConfig = pydocs.TfdsConfig


def tfds_data_dir(data: "DataConfig | None" = None) -> str:
  """The TFDS data dir of `data` (default: the gin binding in effect now), else
  $TFDS_DATA_DIR, else TFDS's default."""
  return pydocs.resolve_data_dir((data or data_config()).tfds.data_dir)


# ----------------------------------------------------------------------------- TFDS

def _tfds_corpus(
    name: str, tfds_name: str, text_key: str, splits: Mapping[str, str], description: str
) -> Corpus:
  """A corpus read from prepared TFDS files (never downloaded here)."""

  def make_source(data: Optional[DataConfig] = None) -> seqio.DataSource:
    # read_only: a missing dataset fails instead of starting a download.
    return seqio.TfdsDataSource(
        tfds_name=tfds_name, tfds_data_dir=tfds_data_dir(data), splits=dict(splits),
        read_only=True)

  def prepare(data: Optional[DataConfig] = None) -> None:
    pydocs.require_tfds(tfds_name, tfds_data_dir(data), f"corpus {name!r}")

  return Corpus(name, description, text_key, make_source, prepare)


def _make_pydocs_source(data: Optional[DataConfig] = None) -> seqio.DataSource:
  return seqio.TfdsDataSource(
      tfds_name=pydocs.TFDS_NAME, tfds_data_dir=tfds_data_dir(data),
      splits={s: s for s in SPLITS}, read_only=True)


def _prepare_pydocs(data: Optional[DataConfig] = None) -> None:
  pydocs.ensure_built(tfds_data_dir(data))


# ---------------------------------------------------------------------------- local

@gin.configurable
@dataclasses.dataclass(frozen=True)
class LocalTextConfig:
  """Local (or gs://) text files.

  Attributes:
    train_glob: files of the train split. `.jsonl`: one JSON object per line, the text
      under `text_key`; any other file: one document per non-empty line.
    validation_glob: files of the validation split; "" holds out the documents whose
      sha1 mod 20 == 0 (about 5%) from `train_glob`, the rule the embedded corpus uses.
    text_key: the JSON key holding the text in `.jsonl` files.
    bad_records: what a `.jsonl` line that is not a JSON object with a string under
      `text_key` does when it is read: "error" stops the run in one line naming the file
      and line; "skip" drops it and counts it (`skipped_records()`).
  """
  train_glob: str = ""
  validation_glob: str = ""
  text_key: str = "text"
  bad_records: str = "error"

  def __post_init__(self):
    if self.bad_records not in BAD_RECORDS:
      raise ConfigError(f"LocalTextConfig.bad_records={self.bad_records!r} is not valid; "
                        f"valid choices: {', '.join(BAD_RECORDS)}")


BAD_RECORDS = ("error", "skip")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where a run's text comes from, as plain values: the TFDS data dir and the local-text
  files. `objectax` resolves it once per run (`data_config()`) and passes it down; the
  functions here that take one fall back to the gin bindings in effect when given None
  (convenient in a notebook)."""
  tfds: TfdsConfig
  local_text: LocalTextConfig


def data_config() -> DataConfig:
  """The gin-bound TfdsConfig and LocalTextConfig, read now."""
  return DataConfig(tfds=TfdsConfig(), local_text=LocalTextConfig())


def _glob(binding: str, pattern: str) -> list[str]:
  if not pattern:
    raise ConfigError(
        f"corpus 'local' needs LocalTextConfig.{binding}, e.g. "
        f"--gin.LocalTextConfig.{binding}=/data/*.txt")
  if "://" not in pattern:
    pattern = os.path.expanduser(pattern)
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise ConfigError(f"LocalTextConfig.{binding}={pattern!r} matches no files")
  return files


def _split_files(cfg: LocalTextConfig, split: str) -> tuple[list[str], Optional[bool]]:
  """The files of `split`, and which hash side to keep (None: keep every document)."""
  if split not in SPLITS:
    raise ConfigError(f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")
  if cfg.validation_glob:
    binding = "train_glob" if split == "train" else "validation_glob"
    return _glob(binding, getattr(cfg, binding)), None
  return _glob("train_glob", cfg.train_glob), split == "validation"


# ------------------------------------------------------------ records of .jsonl files

# Opens the one line that describes a bad record in the message of the error raised while
# reading it. The record is parsed inside tf.data, so the error reaches the reader as a
# tf.errors.OpError whose message also holds a Python traceback; `bad_record_line` finds
# the line again (the input pipeline turns it into a ConfigError).
BAD_RECORD_MARKER = "objectax-bad-record: "
# Ends the line after BAD_RECORD_MARKER where the message may not end at a newline (a
# tf.debugging assertion's message is followed by its condition on the same line).
BAD_RECORD_END = " (end)"

_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


class BadRecordError(ValueError):
  """A .jsonl record that cannot be read (raised inside tf.data; see BAD_RECORD_MARKER)."""


def bad_record_line(message: str) -> Optional[str]:
  """The one-line description of a bad record in an error's message, or None if the
  error is not about one."""
  start = message.find(BAD_RECORD_MARKER)
  if start < 0:
    return None
  line = message[start + len(BAD_RECORD_MARKER):].split("\n", 1)[0]
  return line.split(BAD_RECORD_END, 1)[0].strip()


def _record_text(line: bytes | str, text_key: str) -> tuple[Optional[str], str]:
  """(the text of a .jsonl record, "") or (None, what is wrong with it, one line)."""
  try:
    record = json.loads(line)
  except ValueError as e:  # json.JSONDecodeError, UnicodeDecodeError
    return None, " ".join(f"not JSON ({e})".split())
  if not isinstance(record, dict):
    return None, f"not a JSON object but {_JSON_TYPES.get(type(record), 'a value')}"
  if text_key not in record:
    return None, f"no key {text_key!r}"
  text = record[text_key]
  if not isinstance(text, str):
    return None, (f"{text_key!r} holds {_JSON_TYPES.get(type(text), 'a value')}, "
                  "not a string")
  return text, ""


_skipped_lock = threading.Lock()
_skipped: dict[str, set[int]] = {}  # file -> line numbers of the bad records skipped


def skipped_records() -> dict[str, int]:
  """How many bad records (LocalTextConfig.bad_records="skip") each file has had skipped
  in this process so far; a record read again (another epoch, another reader of the
  same file) is counted once."""
  with _skipped_lock:
    return {path: len(lines) for path, lines in sorted(_skipped.items())}


def _parse_records(path: str, numbers_M: np.ndarray, lines_M: np.ndarray, text_key: str,
                   bad_records: str) -> np.ndarray:
  """The texts of a batch of non-blank .jsonl lines; a bad record raises BadRecordError
  ("error") or is dropped and counted ("skip")."""
  texts, bad = [], []
  for number, line in zip(numbers_M, lines_M):
    text, what = _record_text(line, text_key)
    if text is not None:
      texts.append(text)
    elif bad_records == "skip":
      bad.append(int(number))
    else:
      raise BadRecordError(
          f"{BAD_RECORD_MARKER}{path}:{int(number)}: {what} "
          f"(LocalTextConfig.bad_records='skip' skips such records and counts them)")
  if bad:
    with _skipped_lock:
      _skipped.setdefault(path, set()).update(bad)
  return np.array(texts, dtype=object)


def _check_jsonl(path: str, text_key: str) -> None:
  """Fails in one line when the first record of a .jsonl file cannot be read."""
  with tf.io.gfile.GFile(path) as f:
    for number, line in enumerate(f, start=1):
      if line.strip():
        text, what = _record_text(line, text_key)
        if text is not None:
          return
        try:
          record = json.loads(line)
        except ValueError:
          record = None
        if isinstance(record, dict) and text_key not in record:
          raise ConfigError(
              f"{path}:{number}: no key {text_key!r} in the first record (its keys: "
              f"{', '.join(map(str, list(record)[:8]))}); set LocalTextConfig.text_key")
        raise ConfigError(f"{path}:{number}: {what} (the first record; "
                          "LocalTextConfig.bad_records='skip' skips such records)")


# Lines handled per tf.data function call: a per-line map or filter costs 8-25 us a call
# (measured on 2 CPU cores), far more than its work. On batches, 100k .txt lines of 5-60
# words read in 0.2 s, 0.4 s with the sha1 split, 0.7 s as .jsonl with the split; one
# call per line (py_function or not) took 24-41 s.
_LINES_PER_BATCH = 256


def _documents(path: tf.Tensor, numbers_N: Optional[tf.Tensor], lines_N: tf.Tensor,
               text_key: str, keep_validation: Optional[bool],
               bad_records: str) -> dict[str, tf.Tensor]:
  """The documents among a batch of lines of file `path`: blank lines dropped, .jsonl
  records parsed (`numbers_N`, their 1-based line numbers, given: a .jsonl file), and
  (keep_validation not None) only one side of the split kept."""
  nonblank_N = tf.strings.length(tf.strings.strip(lines_N)) > 0
  texts_M = tf.boolean_mask(lines_N, nonblank_N)
  if numbers_N is not None:
    # tf.io.decode_json_example reads only tf.Example-shaped JSON: records need Python.
    def parse(path_t, numbers_t, lines_t):
      return _parse_records(path_t.numpy().decode(), numbers_t.numpy(), lines_t.numpy(),
                            text_key, bad_records)
    numbers_M = tf.boolean_mask(numbers_N, nonblank_N)
    texts_M = tf.ensure_shape(
        tf.py_function(parse, [path, numbers_M, texts_M], tf.string), [None])
  if keep_validation is not None:
    # pydocs' rule, sha1(text) mod 20 == 0. TF has no sha1 op, and its native hashes
    # (farmhash, SipHash) would move documents across the split; sha1 itself is ~1 us.
    def held_out(t):
      return np.array([pydocs.is_validation(text) for text in t.numpy()], dtype=bool)
    is_val_M = tf.ensure_shape(tf.py_function(held_out, [texts_M], tf.bool), [None])
    texts_M = tf.boolean_mask(texts_M, tf.equal(is_val_M, keep_validation))
  return {"text": texts_M}


def _read_files(files: list[str], text_key: str, keep_validation: Optional[bool],
                bad_records: str = "error") -> tf.data.Dataset:
  """The documents of `files` as {"text": string}, file after file, each in line order.

  .txt lines need no Python; .jsonl records and the hash split do (a batch per call).
  Each .jsonl line carries its file and line number, which name a bad record.
  """
  def read(path: tf.Tensor, is_jsonl: bool) -> tf.data.Dataset:
    lines = tf.data.TextLineDataset(path)
    if not is_jsonl:
      return lines.batch(_LINES_PER_BATCH).map(
          lambda lines_N: _documents(path, None, lines_N, text_key, keep_validation,
                                     bad_records))
    return lines.enumerate(start=1).batch(_LINES_PER_BATCH).map(
        lambda numbers_N, lines_N: _documents(path, numbers_N, lines_N, text_key,
                                              keep_validation, bad_records))

  is_jsonl = [f.endswith(".jsonl") for f in files]
  files_ds = tf.data.Dataset.from_tensor_slices((files, is_jsonl))
  if all(is_jsonl) or not any(is_jsonl):  # one reader, fixed when the graph is built
    batches = files_ds.flat_map(lambda f, _: read(f, is_jsonl[0]))
  else:
    batches = files_ds.flat_map(
        lambda f, j: tf.cond(j, lambda: read(f, True), lambda: read(f, False)))
  return batches.unbatch()


def count_documents(ds: tf.data.Dataset, limit: int) -> int:
  """How many elements `ds` has, counting at most `limit` (reads no further; meant for
  small limits: tf.data's graph optimizations, which cost more than reading a few
  elements, are off)."""
  options = tf.data.Options()
  options.experimental_optimization.apply_default_optimizations = False
  options.autotune.enabled = False
  return sum(1 for _ in ds.take(limit).with_options(options))


class LocalTextSource(seqio.DataSource):
  """Local text files as a file-sharded `seqio.DataSource` (splits "train", "validation").

  `cfg` is the run's LocalTextConfig; without one, the gin-bound LocalTextConfig is read
  when shards are listed or a dataset is built, so bindings parsed later apply. Files are
  read in sorted order (a seeded shuffle of them when `shuffle`), each file in turn, so
  the tf.data iterator position can be checkpointed with the training state. With `shard_info` and at least
  as many files as shards, each shard (host) reads its own files; with fewer files, each
  reads all of them and keeps every num_shards-th document.
  """

  def __init__(self, cfg: Optional[LocalTextConfig] = None):
    super().__init__(splits=SPLITS)
    self._cfg = cfg

  @property
  def cfg(self) -> LocalTextConfig:
    return self._cfg if self._cfg is not None else LocalTextConfig()

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False

  def list_shards(self, split: str) -> list[str]:
    return _split_files(self.cfg, split)[0]

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self.cfg!r})"

  def too_few_documents_hint(self, split: str, cap: int = 1000) -> str:
    """What to change when `split` holds too few documents, in one line (it may read up
    to `cap` documents to say how many the hash split chose from)."""
    cfg = self.cfg
    files, keep_validation = _split_files(cfg, split)
    skipped = sum(skipped_records().get(path, 0) for path in files)
    note = (f" ({skipped} bad records were skipped: LocalTextConfig.bad_records='skip')"
            if skipped else "")
    if keep_validation:
      n = count_documents(_read_files(files, cfg.text_key, None, cfg.bad_records), cap)
      return (f"without LocalTextConfig.validation_glob it holds out the documents of "
              f"LocalTextConfig.train_glob={cfg.train_glob!r} whose sha1 mod 20 == 0, about "
              f"1 in 20 of its {n if n < cap else f'{cap}+'} documents{note}; set "
              "LocalTextConfig.validation_glob to files of validation documents")
    binding = "validation_glob" if split == "validation" else "train_glob"
    return f"add documents to LocalTextConfig.{binding}={getattr(cfg, binding)!r}{note}"

  def get_dataset(
      self,
      split: str = "train",
      shuffle: bool = True,
      seed: Optional[int] = None,
      shard_info: Optional[seqio.ShardInfo] = None,
      *,
      sequence_length: Optional[Mapping[str, int]] = None,  # unused, as in seqio
      use_cached: bool = False,  # unused
      num_epochs: Optional[int] = 1,  # unused
  ) -> tf.data.Dataset:
    """The documents of `split` as {"text": string}."""
    del sequence_length, use_cached, num_epochs
    cfg = self.cfg
    files, keep_validation = _split_files(cfg, split)
    by_file = shard_info is not None and len(files) >= shard_info.num_shards
    if by_file:  # before the shuffle, so that shards partition the same sorted list
      files = files[shard_info.index::shard_info.num_shards]
    if shuffle:
      random.Random(seed).shuffle(files)
    ds = _read_files(files, cfg.text_key, keep_validation, cfg.bad_records)
    if shard_info is not None and not by_file:
      ds = ds.shard(shard_info.num_shards, shard_info.index)
    # The py_functions are pure (same lines in, same values out), so the iterator may be
    # checkpointed without their "state"; the default policy would refuse to save it.
    options = tf.data.Options()
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    return ds.with_options(options)


def _make_local_source(data: Optional[DataConfig] = None) -> seqio.DataSource:
  return LocalTextSource(data.local_text if data is not None else None)


def _prepare_local(data: Optional[DataConfig] = None) -> None:
  cfg = (data or data_config()).local_text
  for split in SPLITS:
    files, _ = _split_files(cfg, split)
    for path in files:
      if path.endswith(".jsonl") and cfg.bad_records == "error":
        _check_jsonl(path, cfg.text_key)


# ------------------------------------------------------------------------- prompted

# Examples generated per tf.data call (a Python call costs far more than tf.data's own
# per-element work; see _LINES_PER_BATCH).
_PROMPTS_PER_BATCH = 256
_ENDLESS = 2**62


class PromptedSource(seqio.DataSource):
  """Prompted training examples of data/zeroshot_tasks.py's trained families.

  Example i of a split is `zeroshot_tasks.training_pair(i, split, seed)`, a pure function,
  so the stream is deterministic, its tf.data iterator (a range, then a map) checkpoints
  exactly, and shard k of n reads indices k, k + n, ... . Splits: "train" is endless;
  "validation" is the fixed first VALIDATION_EXAMPLES indices of its own seed stream.
  Neither can equal an evaluation example (zeroshot_tasks.TRAIN_SIZES says why), and the
  families facts_backward and last_word are held out entirely. Features: "inputs"
  (prompt), "targets" (answer) and "text" (prompt + " " + answer).
  """

  def __init__(self):
    super().__init__(splits=SPLITS)

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def list_shards(self, split: str) -> list[str]:
    return [split]

  def get_dataset(
      self,
      split: str = "train",
      shuffle: bool = True,
      seed: Optional[int] = None,
      shard_info: Optional[seqio.ShardInfo] = None,
      *,
      sequence_length: Optional[Mapping[str, int]] = None,  # unused, as in seqio
      use_cached: bool = False,  # unused
      num_epochs: Optional[int] = 1,  # unused
  ) -> tf.data.Dataset:
    """{"inputs", "targets", "text"} strings; `shuffle` is moot (examples are i.i.d.)."""
    del shuffle, sequence_length, use_cached, num_epochs
    from objectax.data import zeroshot_tasks  # pylint: disable=g-import-not-at-top
    if split not in SPLITS:
      raise ConfigError(f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")
    stop = _ENDLESS if split == "train" else zeroshot_tasks.VALIDATION_EXAMPLES
    index, count = (shard_info.index, shard_info.num_shards) if shard_info else (0, 1)
    seed = 0 if seed is None else int(seed)

    def make(indices_N):
      pairs = [zeroshot_tasks.training_pair(int(i), split, seed) for i in indices_N.numpy()]
      return (np.array([p for p, _ in pairs], dtype=object),
              np.array([a for _, a in pairs], dtype=object))

    def examples(indices_N: tf.Tensor) -> dict[str, tf.Tensor]:
      prompts_N, answers_N = tf.py_function(make, [indices_N], [tf.string, tf.string])
      prompts_N = tf.ensure_shape(prompts_N, [None])
      answers_N = tf.ensure_shape(answers_N, [None])
      return {"inputs": prompts_N, "targets": answers_N,
              "text": tf.strings.join([prompts_N, answers_N], separator=" ")}

    ds = tf.data.Dataset.range(index, stop, count).batch(_PROMPTS_PER_BATCH)
    ds = ds.map(examples).unbatch()
    # The py_function is pure (index in, example out): the iterator may be checkpointed.
    options = tf.data.Options()
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    return ds.with_options(options)


def _make_prompted_source(data: Optional[DataConfig] = None) -> seqio.DataSource:
  del data  # generated: nothing to locate
  return PromptedSource()


# ------------------------------------------------------------------------- registry

CORPORA = Registry[Corpus]("corpus")
CORPORA.add("pydocs", Corpus(
    "pydocs",
    "Python's own documentation (pydoc topics + stdlib docstrings, ~2 MB); built offline",
    "text", _make_pydocs_source, _prepare_pydocs))
# c4/en 3.1.0 is the current version in TFDS 4.9.10 (also lists 2.2.0-2.3.1).
CORPORA.add("c4", _tfds_corpus(
    "c4", "c4/en:3.1.0", "text", {"train": "train", "validation": "validation"},
    "Colossal Clean Crawled Corpus, English (T5's pretraining data); TFDS c4/en:3.1.0"))
# Wikipedia has only a train split in TFDS: the first 1% of it is held out.
CORPORA.add("wikipedia", _tfds_corpus(
    "wikipedia", "wikipedia/20230601.en:1.0.0", "text",
    {"train": "train[1%:]", "validation": "train[:1%]"},
    "English Wikipedia, 2023-06-01 dump; TFDS wikipedia/20230601.en:1.0.0"))
CORPORA.add("lm1b", _tfds_corpus(
    "lm1b", "lm1b:1.1.0", "text", {"train": "train", "validation": "test"},
    "One Billion Word benchmark (shuffled sentences); TFDS lm1b:1.1.0"))
CORPORA.add("local", Corpus(
    "local", "local text files: LocalTextConfig.train_glob (.txt lines or .jsonl records)",
    "text", _make_local_source, _prepare_local))
# Generated, so nothing to prepare but the embedded corpus the default vocabulary is
# trained on.
CORPORA.add("prompted", Corpus(
    "prompted", "prompted examples (recall, copy, facts_forward) for multitask finetuning; "
    "generated offline", "text", _make_prompted_source, _prepare_pydocs, kind="prompted"))


def get_corpus(name: str) -> Corpus:
  """The corpus registered as `name`; a typo fails in one line listing the choices."""
  return CORPORA.get(name)
