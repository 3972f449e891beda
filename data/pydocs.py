"""The embedded corpus: the English prose that ships with the running Python, as a TFDS dataset.

Every Python installation carries its own documentation: `pydoc_data.topics.topics` (the
language reference topics that `help()` shows) and the docstrings of the standard library.
That is a few MB of English with no download, so a laptop with no network can train a real
tokenizer and a real (tiny) model. The corpus is exposed as an ordinary TFDS builder,
`objectax_pydocs/py311:1.0.0`, so it flows through `seqio.TfdsDataSource` exactly as c4 does;
importing this module registers the builder with TFDS.

Documents:
  * one per `pydoc_data` topic, id `topics/<topic>`;
  * one per standard-library module, id `stdlib/<path relative to the stdlib>`: the module
    docstring then every class/function/method docstring in source order. The sources are
    parsed with `ast`, never imported (importing `antigravity` opens a browser, `this`
    prints, and many modules need optional C extensions).

Each text is cleaned the same way: `inspect.cleandoc`, paragraphs (blank-line separated)
kept, whitespace inside a paragraph collapsed. Documents shorter than `MIN_CHARS` are
dropped, identical texts are kept once (first in sorted order), and a document goes to
`validation` iff sha1(id) mod 20 == 0 (about 5%), so the splits share neither an id nor a
text and the assignment does not move when other documents come or go.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import inspect
import io
import os
import sys
import sysconfig
import time
from pathlib import Path
from typing import Iterator

from etils import epath
import gin
import tensorflow_datasets as tfds

from objectax.models.registry import ConfigError

# Documents shorter than this are mostly one-line docstrings ("Return self.") that teach a
# model nothing but the end-of-sequence token.
MIN_CHARS = 200
# 1 in VALIDATION_MODULUS documents is held out: about 5%.
VALIDATION_MODULUS = 20

# Folders of the stdlib whose .py files are not the library's own prose: tests (inflated by
# fixtures and deliberately malformed files), IDLE and turtle demos (applications), lib2to3
# (deprecated, its fixers are code templates), and whatever pip installed.
_SKIP_DIRS = frozenset({
    "site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo",
    "__pycache__",
})

CONFIG_NAME = f"py{sys.version_info.major}{sys.version_info.minor}"
VERSION = "1.0.0"
TFDS_NAME = f"objectax_pydocs/{CONFIG_NAME}:{VERSION}"


def is_validation(key: str | bytes) -> bool:
  """The split rule shared by every corpus without its own split: sha1(key) mod 20 == 0.

  `key` is text or its UTF-8 bytes (as tf.data yields it); both give the same answer.
  """
  digest = hashlib.sha1(key.encode("utf-8") if isinstance(key, str) else key).digest()
  return int.from_bytes(digest[:8], "big") % VALIDATION_MODULUS == 0


def clean_text(text: str) -> str:
  """cleandoc, then one line per paragraph with whitespace collapsed; blank lines between.

  >>> clean_text("  Return the sum.\\n\\n    Args:\\n      a: one   number.\\n")
  'Return the sum.\\n\\nArgs: a: one number.'
  """
  paragraphs = []
  for block in inspect.cleandoc(text).split("\n\n"):
    para = " ".join(block.split())
    if para:
      paragraphs.append(para)
  return "\n\n".join(paragraphs)


def _module_text(source: bytes) -> str:
  """Module docstring, then each class/function docstring in source order, cleaned."""
  tree = ast.parse(source)
  nodes = [tree] + [
      n for n in ast.walk(tree)
      if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
  ]
  # ast.walk is breadth-first; sort by line so nested methods follow their class.
  nodes[1:] = sorted(nodes[1:], key=lambda n: (n.lineno, n.col_offset))
  parts = []
  for node in nodes:
    doc = ast.get_docstring(node, clean=False)
    if doc:
      cleaned = clean_text(doc)
      if cleaned:
        parts.append(cleaned)
  return "\n\n".join(parts)


def _stdlib_files(root: Path) -> list[Path]:
  files = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
    files.extend(Path(dirpath) / f for f in filenames if f.endswith(".py"))
  return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _raw_documents() -> Iterator[tuple[str, str]]:
  """(id, text) for every topic and stdlib module, in sorted order, before filtering."""
  # pydoc_data.topics is a pure data module (a dict literal), safe to import.
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top

  for name in sorted(topics.topics):
    yield f"topics/{name}", clean_text(topics.topics[name])
  root = Path(sysconfig.get_paths()["stdlib"])
  for path in _stdlib_files(root):
    try:
      text = _module_text(path.read_bytes())
    except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError, OSError):
      continue  # not parseable by this interpreter (templates, other-version fixtures)
    yield f"stdlib/{path.relative_to(root).as_posix()}", text


@functools.lru_cache(maxsize=1)
def documents() -> tuple[tuple[str, str], ...]:
  """The corpus, filtered (>= MIN_CHARS) and deduplicated by text, in deterministic order."""
  seen: set[str] = set()
  docs = []
  for doc_id, text in _raw_documents():
    if len(text) < MIN_CHARS or text in seen:
      continue
    seen.add(text)
    docs.append((doc_id, text))
  return tuple(docs)


def split_documents(split: str) -> list[tuple[str, str]]:
  """The (id, text) pairs of `split` ("train" or "validation"), in corpus order."""
  want_validation = split == "validation"
  return [(i, t) for i, t in documents() if is_validation(i) == want_validation]


class ObjectaxPydocs(tfds.core.GeneratorBasedBuilder):
  """Python's own documentation: pydoc topics and standard-library docstrings."""

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {str(VERSION): "pydoc topics + stdlib docstrings; sha1(id) % 20 == 0 held out."}
  # One config per interpreter: another Python carries other documentation, and must not
  # read (or overwrite) this one's files.
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(
          name=CONFIG_NAME,
          description=f"Documentation of the Python {sys.version_info.major}."
          f"{sys.version_info.minor} that builds it.",
      )
  ]

  # TFDS locates a builder's checksums and metadata through its top-level package, and
  # `objectax` is a namespace package that importlib.resources cannot open: point it here.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    # DatasetInfo directly, not dataset_info_from_configs: the latter looks for metadata
    # files in the builder's package, and `objectax` is a namespace package it cannot open.
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.split("\n\n")[0],
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(),
            "text": tfds.features.Text(),
        }),
        homepage="https://docs.python.org/3/",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in ("train", "validation")}

  def _generate_examples(self, split: str):
    for doc_id, text in split_documents(split):
      yield doc_id, {"id": doc_id, "text": text}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TfdsConfig:
  """Where TFDS datasets (and the vocabulary trained here) live.

  Attributes:
    data_dir: the TFDS data dir; "" means $TFDS_DATA_DIR, else ~/tensorflow_datasets.
  """
  data_dir: str = ""


def resolve_data_dir(data_dir: str | None = None) -> str:
  """The TFDS data dir: the argument, else TfdsConfig.data_dir (gin), else $TFDS_DATA_DIR,
  else TFDS's default. Read at call time, so bindings parsed after import apply."""
  path = os.fspath(
      data_dir or TfdsConfig().data_dir or os.environ.get("TFDS_DATA_DIR")
      or tfds.core.constants.DATA_DIR)
  return path if "://" in path else os.path.expanduser(path)


def dataset_dir(data_dir: str | None = None) -> str:
  """Where TFDS keeps the prepared corpus: <data_dir>/objectax_pydocs/<config>/<version>."""
  return os.path.join(resolve_data_dir(data_dir), "objectax_pydocs", CONFIG_NAME, VERSION)


def is_built(data_dir: str | None = None) -> bool:
  """Whether the corpus is prepared under `data_dir` (local or remote, e.g. gs://)."""
  # dataset_info.json is written last inside TFDS's temporary directory, and that
  # directory only appears under its final name (by rename) once complete.
  return (epath.Path(dataset_dir(data_dir)) / "dataset_info.json").exists()


@contextlib.contextmanager
def file_lock(data_dir: str, name: str) -> Iterator[None]:
  """An exclusive advisory lock `name`, so racing processes (one per GPU) do a job once.

  The lock file is <data_dir>/objectax_pydocs/.<name>.lock. flock locks belong to an open
  file, so two threads of one process exclude each other too. Remote dirs (gs://) have no
  flock: there the lock is a no-op and the caller's atomic rename must guard the result.
  """
  if "://" in data_dir:
    yield
    return
  lock_dir = os.path.join(data_dir, "objectax_pydocs")
  os.makedirs(lock_dir, exist_ok=True)
  with open(os.path.join(lock_dir, f".{name}.lock"), "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _build_lock(data_dir: str) -> contextlib.AbstractContextManager[None]:
  """The lock of the corpus build (TFDS's rename still guards the result on remote dirs)."""
  return file_lock(data_dir, CONFIG_NAME)


@contextlib.contextmanager
def _quiet_tfds() -> Iterator[None]:
  """Silences TFDS's own banners and progress bars: we print one line of our own."""
  was_active = tfds.core.utils.tqdm_utils._active  # pylint: disable=protected-access
  tfds.display_progress_bar(False)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    tfds.display_progress_bar(was_active)


def keep_tensorflow_off_accelerators() -> None:
  """Hides GPUs from TensorFlow: TF would grab the GPU memory JAX needs (input needs none)."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError):
    pass  # TF already initialized its devices; whoever did so decided


def ensure_built(data_dir: str | None = None) -> str:
  """Prepares the corpus under `data_dir` unless already there; returns the data dir used.

  `data_dir`: see `resolve_data_dir`. Downloads nothing.
  Safe when processes race: they serialize on a lock file and the
  later one finds the data built. Without a lock (remote dirs), each process writes into
  its own temporary directory and renames it into place; the loser's rename fails on the
  existing directory and it then finds the winner's complete copy.
  """
  data_dir = resolve_data_dir(data_dir)
  if is_built(data_dir):
    return data_dir
  keep_tensorflow_off_accelerators()
  with _build_lock(data_dir):
    if is_built(data_dir):
      return data_dir
    start = time.time()
    builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
    try:
      with _quiet_tfds():
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    except OSError:
      if not is_built(data_dir):
        raise
      return data_dir  # another process won the race
    splits = builder.info.splits
    n_bytes = sum(len(t.encode("utf-8")) for _, t in documents())
    print(
        f"building the embedded corpus {TFDS_NAME} in {data_dir}: "
        f"{splits['train'].num_examples} train / {splits['validation'].num_examples} "
        f"validation documents, {n_bytes / 1e6:.1f} MB, in {time.time() - start:.1f} s",
        flush=True,
    )
  return data_dir


def require_tfds(tfds_name: str, data_dir: str, who: str) -> None:
  """A one-line ConfigError unless `tfds_name` is prepared under `data_dir` (no download)."""
  builder = tfds.builder(tfds_name, data_dir=data_dir)  # from code: no I/O, no network
  if not (epath.Path(builder.data_path) / "dataset_info.json").exists():
    raise ConfigError(
        f"{who} needs the TFDS dataset {tfds_name} prepared under {data_dir} (not found at "
        f"{builder.data_path}); prepare it where there is network with `tfds build "
        f"{tfds_name} --data_dir={data_dir}` and copy it here, or point TfdsConfig.data_dir / "
        "$TFDS_DATA_DIR at an existing copy")
