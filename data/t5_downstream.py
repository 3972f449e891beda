"""T5's downstream tasks over TFDS, in T5's text-to-text formats, with T5's metrics.

Raffel et al. (2020) fine-tune and evaluate on GLUE, SuperGLUE, SQuAD, CNN/DailyMail and
WMT; comparing pretraining objectives on the same tasks, in the same formats, keeps our
numbers next to theirs. Each task is a `seqio.Task` registered (at import, by `register()`)
under T5's name: a read-only `seqio.TfdsDataSource`, a text preprocessor written here that
makes T5's {"inputs", "targets"} strings, `seqio.preprocessors.tokenize` and
`append_eos_after_trim` with `objectax.data.vocab.default_vocabulary()` (add_eos=True), a
`postprocess_fn` that turns a label string back into its class index (-1 for a string that
is no label) and the scorers of `objectax.data.text_metrics`. Registering reads nothing
and downloads nothing; the data dir is resolved when a dataset is read (the argument of
`check_prepared`, else gin's TfdsConfig.data_dir, else $TFDS_DATA_DIR, else TFDS's
default), so gin bindings parsed after import apply.

Tasks (TFDS dataset; inputs -> targets; metrics; targets length):

  glue_cola_v002      glue/cola:2.0.0   "cola sentence: S" -> unacceptable|acceptable; MCC; 8
  glue_sst2_v002      glue/sst2:2.0.0   "sst2 sentence: S" -> negative|positive; accuracy; 8
  glue_mrpc_v002      glue/mrpc:2.0.0   "mrpc sentence1: A sentence2: B" ->
                      not_equivalent|equivalent; F1, accuracy; 8
  glue_qqp_v002       glue/qqp:2.0.0    "qqp question1: A question2: B" ->
                      not_duplicate|duplicate; F1, accuracy; 16
  glue_stsb_v002      glue/stsb:2.0.0   "stsb sentence1: A sentence2: B" -> the score rounded
                      to the nearest 0.2, one decimal ("3.8"); Pearson, Spearman; 8
  glue_mnli_v002      glue/mnli:2.0.0   "mnli hypothesis: H premise: P" ->
                      entailment|neutral|contradiction; accuracy; 8. Splits as TFDS names
                      them: validation_matched, validation_mismatched (no "validation").
  glue_qnli_v002      glue/qnli:2.0.0   "qnli question: Q sentence: S" ->
                      entailment|not_entailment; accuracy; 8
  glue_rte_v002       glue/rte:2.0.0    "rte sentence1: A sentence2: B" ->
                      entailment|not_entailment; accuracy; 8
  glue_wnli_v002      glue/wnli:2.0.0   "wnli sentence1: A sentence2: B" ->
                      not_entailment|entailment; accuracy; 8
  super_glue_boolq_v102    super_glue/boolq:1.0.2   "boolq passage: P question: Q" ->
                           False|True; accuracy; 8
  super_glue_cb_v102       super_glue/cb:1.0.2      "cb hypothesis: H premise: P" ->
                           entailment|contradiction|neutral; macro F1, accuracy; 8
  super_glue_copa_v102     super_glue/copa:1.0.2    "copa choice1: A choice2: B premise: P
                           question: cause|effect" -> choice1|choice2; accuracy; 8
  super_glue_multirc_v102  super_glue/multirc:1.0.2 "multirc question: Q answer: A
                           paragraph: P" (HTML <br>, <b> removed) -> False|True; F1 and
                           accuracy over answers; 8
  super_glue_record_v102   super_glue/record:1.0.2  "record query: Q entities: E1, E2, ...
                           passage: P" (@highlight lines joined into sentences) -> the first
                           answer; SQuAD EM and F1 against all answers; 32
  super_glue_rte_v102      super_glue/rte:1.0.2     "rte hypothesis: H premise: P" ->
                           entailment|not_entailment; accuracy; 8
  super_glue_wic_v102      super_glue/wic:1.0.2     "wic sentence1: A sentence2: B word: W"
                           -> False|True; accuracy; 8
  super_glue_wsc_v102      super_glue/wsc.fixed:1.0.2  "wsc text: ... * candidate * ...
                           # pronoun # ..." -> False|True; accuracy; 8
  squad_v010_allanswers    squad/v1.1:3.0.0         "question: Q context: C" -> the first
                           answer (punctuation spaced out, as T5); SQuAD EM and F1 against
                           all answers; 32
  cnn_dailymail_v002       cnn_dailymail:3.4.0      "summarize: ARTICLE" -> the highlights
                           (one sentence a line); ROUGE-1/2/Lsum; 128
  wmt14_ende_v003          wmt14_translate/de-en:1.0.0  "translate English to German: EN" ->
                           DE; BLEU (sacrebleu); 128. Its test split is newstest2014, the set
                           T5 reports; validation is newstest2013.

Lengths: T5 fine-tuned every task with 512 input tokens; the targets lengths above are
recorded with `task_lengths.set_default_lengths`, long enough for the task's answers: labels 8
(the longest label spelled by the default 8k vocabulary, "not_entailment", is 5 pieces
+ EOS; qqp's "not_duplicate" is 8 pieces + EOS, hence 16), SQuAD and ReCoRD answers 32,
summaries and translations 128. They are T5's trimming lengths: CNN/DailyMail articles,
many SQuAD contexts and some WMT sentences are longer, so train these with
Experiment.long_examples=trim (as T5 trimmed) or bind Experiment.task_lengths.

Where this differs from T5 (each on purpose, each small):
  * MultiRC: T5 reports exact match over each question's answers and F1 over all answers;
    here F1 (positive class) and accuracy over the answers, each answer scored alone.
  * ReCoRD: T5 trains on one example per correct answer and de-duplicates at evaluation;
    here one example per query, targets its first answer, scored (SQuAD EM/F1) against all
    of its answers, so no query weighs more in evaluation for having more answers.
  * WSC: T5's reported WSC predicts the referent's text (its "simple" format, trained on
    correct referents only); here T5's other WSC format, the candidate marked * * and the
    pronoun # #, classified True/False like the rest of SuperGLUE.
  * An unknown predicted label is class -1. Binary F1 (MRPC, QQP, MultiRC) counts it as
    the wrong class, as T5's f1_score_with_invalid does; macro F1 (CB) counts it as the
    next class, since `text_metrics.f1_macro` scores every label it sees (a -1 would be a
    fourth class, scaling the mean by 3/4).
  * SQuAD: T5's padding of punctuation with spaces, without T5's leading/trailing space.
  * cnn_dailymail 3.4.0 instead of T5's 3.1.0, which current TFDS cannot build (3.2.0
    dropped a space before added periods; 3.3.0 and 3.4.0 added features we do not read).

Absent data: TFDS data is never downloaded here. `check_prepared(task)` raises a one-line
ConfigError naming the TFDS dataset, the data dir and the `tfds build` command that
prepares it; every task's source calls it before reading, so an unprepared dataset fails
in that one line rather than in TFDS.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping, Optional, Sequence

from etils import epath
import seqio
import tensorflow as tf

from objectax.data import task_lengths
from objectax.data import pydocs
from objectax.data import text_metrics
from objectax.data import vocab as vocab_lib
from objectax.models.registry import ConfigError

GLUE_VERSION = "2.0.0"
SUPER_GLUE_VERSION = "1.0.2"
INPUTS_LENGTH = 512  # T5 fine-tuned every task with 512 input tokens
UNKNOWN_LABEL = "<unk>"  # T5's target for an unlabelled (test) example

_SPLITS = ("train", "validation", "test")
_MNLI_SPLITS = ("train", "validation_matched", "validation_mismatched", "test_matched",
                "test_mismatched")


@dataclasses.dataclass(frozen=True)
class Spec:
  """One task: where its data is, how an example becomes text, and how it is scored.

  Attributes:
    name: T5's task name.
    tfds_name: the TFDS dataset, "name[/config]:version".
    splits: its TFDS split names, listed so that `task.splits` needs no TFDS metadata.
    format_fn: one TFDS example (dict of tensors) -> {"inputs", "targets", ...} strings.
    metric_fns: seqio metric functions, fn(targets, predictions) -> {name: value}.
    targets_length: the targets length recorded for fine-tuning (inputs: INPUTS_LENGTH).
    postprocess_fn: seqio's postprocess_fn(output, example=, is_target=); None: identity.
    labels: a classification task's label strings, in TFDS's class order.
  """
  name: str
  tfds_name: str
  splits: tuple[str, ...]
  format_fn: Callable[[Mapping[str, tf.Tensor]], dict]
  metric_fns: tuple[Callable, ...]
  targets_length: int
  postprocess_fn: Optional[Callable] = None
  labels: tuple[str, ...] = ()


# ---------------------------------------------------------------------------- formats
# Each takes one TFDS example (a dict of tensors) and returns its T5 strings plus what
# evaluation needs (idx, answers). Written in TF ops so that tf.data runs them in graph
# mode without the GIL.


def _label_text(label, labels: Sequence[str]) -> tf.Tensor:
  """The label's name; UNKNOWN_LABEL for -1 (TFDS's label of unlabelled test examples)."""
  names = tf.constant((UNKNOWN_LABEL, *labels))
  return tf.gather(names, tf.cast(label, tf.int32) + 1)


def _idx(ex) -> dict:
  """The example's index, flattened ("idx/question"...) where TFDS nests it."""
  if "idx" not in ex:
    return {}
  if isinstance(ex["idx"], Mapping):
    return {f"idx/{k}": v for k, v in ex["idx"].items()}
  return {"idx": ex["idx"]}


def _classification(prefix: str, keys: Sequence[str], labels: Sequence[str],
                    strip_html: bool = False) -> Callable:
  """T5's GLUE format: "<prefix> key1: text1 key2: text2 ..." -> the label's name.

  T5 writes the keys in sorted order unless it names an order (MultiRC, WiC); `keys` here
  is that order, spelled out so the format is visible.
  """
  labels = tuple(labels)

  def fn(ex):
    parts = [prefix]
    for key in keys:
      parts += [f"{key}:", ex[key]]
    inputs = tf.strings.join(parts, separator=" ")
    if strip_html:  # MultiRC's paragraphs carry <br> and <b> markup
      inputs = tf.strings.regex_replace(inputs, "<br>", " ")
      inputs = tf.strings.regex_replace(inputs, "<(/)?b>", "")
    return {"inputs": inputs, "targets": _label_text(ex["label"], labels), **_idx(ex)}

  fn.__name__ = f"format_{prefix}"
  return fn


def format_stsb(ex) -> dict:
  """STS-B as T5: the 0-5 score rounded to the nearest 0.2, written with one decimal.

  Rounding makes the regression a 26-way choice of short strings a decoder can emit; tf's
  round is half-to-even, as T5's, so 3.7 (18.5 fifths) gives "3.6".
  """
  inputs = tf.strings.join(["stsb sentence1:", ex["sentence1"], "sentence2:",
                            ex["sentence2"]], separator=" ")
  score = tf.round(tf.cast(ex["label"], tf.float32) * 5.0) / 5.0
  return {"inputs": inputs, "targets": tf.strings.as_string(score, precision=1), **_idx(ex)}


_REGEX_SPECIAL = r"([\\.^$|?*+()\[\]{}])"


def _mark_span(text, span, word_index, mark: str):
  """`text` with `span`, found at whitespace-separated word `word_index`, written
  "<mark> span <mark>"; unchanged where the span is not there (as T5)."""
  escaped = tf.strings.regex_replace(span, _REGEX_SPECIAL, r"\\\1")
  pattern = tf.strings.join(
      ["^((?:\\S+\\s){", tf.strings.as_string(word_index), "})(", escaped, ")"])
  return tf.strings.regex_replace(text, pattern, f"\\1{mark} \\2 {mark}")


def format_wsc(ex) -> dict:
  """WSC as T5's classification format: the candidate marked * *, the pronoun # #."""
  span1 = tf.cast(ex["span1_index"], tf.int32)
  span2 = tf.cast(ex["span2_index"], tf.int32)
  text = _mark_span(ex["text"], ex["span1_text"], span1, "*")
  # The two marks around span 1 are two more words before span 2 when span 1 comes first.
  span2 += 2 * tf.cast(span1 < span2, tf.int32)
  text = _mark_span(text, ex["span2_text"], span2, "#")
  return {"inputs": tf.strings.join(["wsc text:", text], separator=" "),
          "targets": _label_text(ex["label"], ("False", "True")), **_idx(ex)}


def _first_or_unknown(answers) -> tf.Tensor:
  """The first answer, or UNKNOWN_LABEL when there is none (ReCoRD's test split)."""
  return tf.concat([answers, [UNKNOWN_LABEL]], axis=0)[0]


def format_record(ex) -> dict:
  """ReCoRD as T5: query, the candidate entities, then the passage, whose "@highlight"
  lines (the article's bullet points) are joined into sentences."""
  passage = tf.strings.regex_replace(ex["passage"], "([.?!\"'])\n@highlight\n", "\\1 ")
  passage = tf.strings.regex_replace(passage, "\n@highlight\n", ". ")
  entities = tf.strings.reduce_join(ex["entities"], separator=", ")
  inputs = tf.strings.join(["record query:", ex["query"], "entities:", entities, "passage:",
                            passage], separator=" ")
  return {"inputs": inputs, "targets": _first_or_unknown(ex["answers"]),
          "answers": ex["answers"], **_idx(ex)}


def _pad_punctuation(text) -> tf.Tensor:
  """T5's SQuAD spelling: a space either side of every non-word character (RE2's \\W:
  ASCII word characters only, as T5), whitespace runs collapsed, ends stripped."""
  text = tf.strings.regex_replace(text, r"(\W)", r" \1 ")
  return tf.strings.strip(tf.strings.regex_replace(text, r"\s+", " "))


def format_squad(ex) -> dict:
  """SQuAD v1.1 as T5: "question: Q context: C" -> the first answer, all answers kept."""
  answers = _pad_punctuation(ex["answers"]["text"])
  inputs = tf.strings.join(["question:", _pad_punctuation(ex["question"]), "context:",
                            _pad_punctuation(ex["context"])], separator=" ")
  return {"inputs": inputs, "targets": _first_or_unknown(answers), "answers": answers,
          "id": ex["id"]}


def format_cnn_dailymail(ex) -> dict:
  """Summarization as T5: "summarize: ARTICLE" -> the highlights, one sentence a line."""
  return {"inputs": tf.strings.join(["summarize:", ex["article"]], separator=" "),
          "targets": ex["highlights"]}


def format_wmt14_ende(ex) -> dict:
  """Translation as T5: "translate English to German: EN" -> DE."""
  return {"inputs": tf.strings.join(["translate English to German: ", ex["en"]]),
          "targets": ex["de"]}


def _text_preprocessor(format_fn: Callable) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
  """A seqio preprocessor mapping `format_fn` (kept as `.format_fn`) over the dataset."""

  def preprocess(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset.map(format_fn, num_parallel_calls=tf.data.AUTOTUNE)

  preprocess.__name__ = getattr(format_fn, "__name__", "format")
  preprocess.format_fn = format_fn
  return preprocess


# ------------------------------------------------------------------- postprocessing


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def label_to_index(labels: Sequence[str]) -> Callable[..., int]:
  """A postprocess_fn: a label string (predicted or target) -> its index, else -1.

  The metrics then compare class indices, as T5's do; surrounding spaces are ignored (a
  decoder may emit one), anything else that is no label is -1.
  """
  labels = tuple(labels)

  def postprocess(output, example=None, is_target: bool = False) -> int:
    del example, is_target
    text = _text(output).strip()
    return labels.index(text) if text in labels else -1

  return postprocess


def string_to_float(output, example=None, is_target: bool = False) -> float:
  """STS-B's postprocess_fn: the written score as a float; -1.0 when it is no number."""
  del example, is_target
  try:
    return float(_text(output).strip())
  except ValueError:
    return -1.0


def all_answers(output, example=None, is_target: bool = False):
  """SQuAD's and ReCoRD's postprocess_fn: a prediction stays a string; a target becomes
  the list of every answer of its example, so the metric takes the best match."""
  if not is_target:
    return _text(output)
  answers = [] if example is None else [_text(a) for a in example.get("answers", ())]
  return answers or [_text(output)]


def _invalid_as_wrong(metric: Callable, num_classes: int) -> Callable:
  """`metric` with each unknown prediction (-1) replaced by a class other than its target.

  sklearn's F1 would otherwise see -1 as one more class: binary F1 refuses the input and
  macro F1 averages in a class with F1 0. For two classes this is T5's
  f1_score_with_invalid (an invalid prediction is the opposite of the target).
  """

  @functools.wraps(metric)
  def scored(targets, predictions):
    if len(targets) != len(predictions):
      return metric(targets, predictions)  # its own check names the mismatch
    return metric(targets, [p if p in range(num_classes) else (int(t) + 1) % num_classes
                            for t, p in zip(targets, predictions)])

  return scored


# ------------------------------------------------------------------------ the tasks


def _glue(name: str, keys: Sequence[str], labels: Sequence[str], metric_fns,
          targets_length: int = 8, splits=_SPLITS) -> Spec:
  return Spec(f"glue_{name}_v002", f"glue/{name}:{GLUE_VERSION}", tuple(splits),
               _classification(name, keys, labels), tuple(metric_fns), targets_length,
               label_to_index(labels), tuple(labels))


def _super_glue(name: str, keys: Sequence[str], labels: Sequence[str], metric_fns,
                strip_html: bool = False) -> Spec:
  return Spec(f"super_glue_{name}_v102", f"super_glue/{name}:{SUPER_GLUE_VERSION}",
               _SPLITS, _classification(name, keys, labels, strip_html), tuple(metric_fns),
               8, label_to_index(labels), tuple(labels))


_F1 = _invalid_as_wrong(text_metrics.f1_binary, 2)
_CB_LABELS = ("entailment", "contradiction", "neutral")
_NLI2 = ("entailment", "not_entailment")
_BOOL = ("False", "True")

_SPECS: tuple[Spec, ...] = (
    _glue("cola", ["sentence"], ("unacceptable", "acceptable"),
          [text_metrics.matthews_corrcoef]),
    _glue("sst2", ["sentence"], ("negative", "positive"), [text_metrics.accuracy]),
    _glue("mrpc", ["sentence1", "sentence2"], ("not_equivalent", "equivalent"),
          [_F1, text_metrics.accuracy]),
    _glue("qqp", ["question1", "question2"], ("not_duplicate", "duplicate"),
          [_F1, text_metrics.accuracy], targets_length=16),
    Spec("glue_stsb_v002", f"glue/stsb:{GLUE_VERSION}", _SPLITS, format_stsb,
          (text_metrics.pearson, text_metrics.spearman), 8, string_to_float),
    _glue("mnli", ["hypothesis", "premise"], ("entailment", "neutral", "contradiction"),
          [text_metrics.accuracy], splits=_MNLI_SPLITS),
    _glue("qnli", ["question", "sentence"], _NLI2, [text_metrics.accuracy]),
    _glue("rte", ["sentence1", "sentence2"], _NLI2, [text_metrics.accuracy]),
    _glue("wnli", ["sentence1", "sentence2"], ("not_entailment", "entailment"),
          [text_metrics.accuracy]),
    _super_glue("boolq", ["passage", "question"], _BOOL, [text_metrics.accuracy]),
    _super_glue("cb", ["hypothesis", "premise"], _CB_LABELS,
                [_invalid_as_wrong(text_metrics.f1_macro, 3), text_metrics.accuracy]),
    _super_glue("copa", ["choice1", "choice2", "premise", "question"],
                ("choice1", "choice2"), [text_metrics.accuracy]),
    _super_glue("multirc", ["question", "answer", "paragraph"], _BOOL,
                [_F1, text_metrics.accuracy], strip_html=True),
    Spec("super_glue_record_v102", f"super_glue/record:{SUPER_GLUE_VERSION}", _SPLITS,
          format_record, (text_metrics.squad,), 32, all_answers),
    _super_glue("rte", ["hypothesis", "premise"], _NLI2, [text_metrics.accuracy]),
    _super_glue("wic", ["sentence1", "sentence2", "word"], _BOOL, [text_metrics.accuracy]),
    Spec("super_glue_wsc_v102", f"super_glue/wsc.fixed:{SUPER_GLUE_VERSION}", _SPLITS,
          format_wsc, (text_metrics.accuracy,), 8, label_to_index(_BOOL), _BOOL),
    Spec("squad_v010_allanswers", "squad/v1.1:3.0.0", ("train", "validation"),
          format_squad, (text_metrics.squad,), 32, all_answers),
    Spec("cnn_dailymail_v002", "cnn_dailymail:3.4.0", _SPLITS, format_cnn_dailymail,
          (text_metrics.rouge,), 128),
    Spec("wmt14_ende_v003", "wmt14_translate/de-en:1.0.0", _SPLITS, format_wmt14_ende,
          (text_metrics.bleu,), 128),
)

SPECS: dict[str, Spec] = {s.name: s for s in _SPECS}
TASKS: tuple[str, ...] = tuple(SPECS)
TFDS_NAMES: dict[str, str] = {s.name: s.tfds_name for s in _SPECS}
# The label names of each classification task, in TFDS's class order.
LABELS: dict[str, tuple[str, ...]] = {s.name: s.labels for s in _SPECS if s.labels}


# ----------------------------------------------------------------------- absent data


def dataset_path(tfds_name: str, data_dir: str) -> epath.Path:
  """Where TFDS keeps a prepared `name[/config][:version]`: data_dir/name/config/version."""
  name, _, version = tfds_name.partition(":")
  path = epath.Path(data_dir).joinpath(*name.split("/"))
  return path / version if version else path


def is_prepared(tfds_name: str, data_dir: str) -> bool:
  """Whether `tfds_name` is prepared under `data_dir` (any version when none is named).

  Looks for TFDS's dataset_info.json, written last and moved into place whole, rather than
  asking `tfds.builder`: that needs the installed TFDS to know the version."""
  path = dataset_path(tfds_name, data_dir)
  if ":" in tfds_name:
    return (path / "dataset_info.json").exists()
  return path.is_dir() and any((p / "dataset_info.json").exists() for p in path.iterdir())


def _reads_from(task_name: str) -> str:
  """The data dir the registered task reads now."""
  if task_name in seqio.TaskRegistry.names():
    source = seqio.TaskRegistry.get(task_name).source
    loader = getattr(source, "tfds_dataset", None)
    if loader is not None and loader.data_dir:
      return loader.data_dir
  return pydocs.resolve_data_dir()


def check_prepared(task_name: str, data_dir: str | None = None) -> None:
  """A one-line ConfigError unless the TFDS dataset of `task_name` is prepared.

  `data_dir`: where to look; None looks where the registered task reads (gin's
  TfdsConfig.data_dir, else $TFDS_DATA_DIR, else TFDS's default). Reads no dataset, never
  downloads: these datasets are built where there is network and copied here.
  """
  if task_name not in SPECS:
    raise ConfigError(f"{task_name!r} is not one of the T5 downstream tasks; known: "
                      f"{', '.join(TASKS)}")
  tfds_name = TFDS_NAMES[task_name]
  data_dir = pydocs.resolve_data_dir(data_dir) if data_dir else _reads_from(task_name)
  if not is_prepared(tfds_name, data_dir):
    raise ConfigError(
        f"task {task_name} reads the TFDS dataset {tfds_name}, which is not prepared in "
        f"{data_dir}: run `tfds build {tfds_name} --data_dir {data_dir}` on a machine with "
        "network (or copy a prepared folder there)")


class _Loader(seqio.utils.LazyTfdsLoader):
  """A TFDS loader whose data dir is resolved when it reads, not when it is registered:
  seqio's override first, then `pydocs.resolve_data_dir()` (gin, $TFDS_DATA_DIR)."""

  @property
  def data_dir(self) -> str:
    return super().data_dir or pydocs.resolve_data_dir()


class _TfdsSource(seqio.TfdsDataSource):
  """A read-only TFDS source that checks, in one line, that its data is prepared before
  it reads: TFDS's own error for absent data is a long trace from deep in tf.data."""

  def __init__(self, task_name: str, tfds_name: str, splits: Sequence[str]):
    split_map = {s: s for s in splits}
    super().__init__(tfds_name=tfds_name, splits=split_map, read_only=True)
    self.task_name = task_name
    self._loader = _Loader(tfds_name, split_map=split_map, read_only=True)

  @property
  def tfds_dataset(self) -> seqio.utils.LazyTfdsLoader:
    return self._loader

  def check_available(self) -> None:
    """Fails in one line when the data is not prepared (callers ask before any work)."""
    check_prepared(self.task_name, self.tfds_dataset.data_dir)

  def get_dataset(self, split: Optional[str] = None, shuffle: bool = True,
                  seed: Optional[int] = None, shard_info=None, **kwargs) -> tf.data.Dataset:
    check_prepared(self.task_name, self.tfds_dataset.data_dir)
    return super().get_dataset(split, shuffle, seed, shard_info, **kwargs)


# ---------------------------------------------------------------------- registration


def register() -> None:
  """Registers every task (reading nothing) and records its lengths; idempotent.

  A name already in seqio's registry is left as it is: ours from an earlier call, or one
  a user registered on purpose (e.g. T5's own, by importing t5.data.tasks first).
  """
  features = None
  for spec in _SPECS:
    task_lengths.set_default_lengths(spec.name, {"inputs": INPUTS_LENGTH,
                                             "targets": spec.targets_length})
    if spec.name in seqio.TaskRegistry.names():
      continue
    if features is None:
      vocabulary = vocab_lib.default_vocabulary()  # trained on first use, not here
      features = {"inputs": seqio.Feature(vocabulary, add_eos=True),
                  "targets": seqio.Feature(vocabulary, add_eos=True)}
    seqio.TaskRegistry.add(
        spec.name,
        source=_TfdsSource(spec.name, spec.tfds_name, spec.splits),
        preprocessors=[_text_preprocessor(spec.format_fn), seqio.preprocessors.tokenize,
                       seqio.preprocessors.append_eos_after_trim],
        output_features=features,
        postprocess_fn=spec.postprocess_fn,
        metric_fns=list(spec.metric_fns))


register()
