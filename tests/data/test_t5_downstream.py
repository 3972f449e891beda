"""T5's downstream tasks: registration, T5's exact formats, postprocessing, metrics, and
the one-line refusal of unprepared data. Offline: no GLUE data exists here, so formats are
checked on hand-made examples shaped like the TFDS features, and against the TFDS features
themselves through `tfds.testing.mock_data` (random examples built from the builders'
code, which needs no download)."""
from __future__ import annotations

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from objectax.data import any_task
from objectax.data import t5_downstream as t5d
from objectax.data import text_metrics
from objectax.data import vocab as vocab_lib
from objectax.models.registry import ConfigError

TARGETS_LENGTHS = {
    **{name: 8 for name in t5d.TASKS},
    "glue_qqp_v002": 16,
    "super_glue_record_v102": 32,
    "squad_v010_allanswers": 32,
    "cnn_dailymail_v002": 128,
    "wmt14_ende_v003": 128,
}
F1, ACC, MCC = text_metrics.f1_binary, text_metrics.accuracy, text_metrics.matthews_corrcoef
METRICS = {  # the text_metrics scorer behind each task's metric_fns
    "glue_cola_v002": [MCC], "glue_sst2_v002": [ACC], "glue_mrpc_v002": [F1, ACC],
    "glue_qqp_v002": [F1, ACC], "glue_stsb_v002": [text_metrics.pearson, text_metrics.spearman],
    "glue_mnli_v002": [ACC], "glue_qnli_v002": [ACC], "glue_rte_v002": [ACC],
    "glue_wnli_v002": [ACC], "super_glue_boolq_v102": [ACC],
    "super_glue_cb_v102": [text_metrics.f1_macro, ACC], "super_glue_copa_v102": [ACC],
    "super_glue_multirc_v102": [F1, ACC], "super_glue_record_v102": [text_metrics.squad],
    "super_glue_rte_v102": [ACC], "super_glue_wic_v102": [ACC], "super_glue_wsc_v102": [ACC],
    "squad_v010_allanswers": [text_metrics.squad], "cnn_dailymail_v002": [text_metrics.rouge],
    "wmt14_ende_v003": [text_metrics.bleu],
}


def _task(name: str) -> seqio.Task:
  return seqio.TaskRegistry.get(name)


def _decoded(value):
  """Numpy values of one example as plain Python (bytes as text)."""
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.ndarray) and value.ndim:
    return [_decoded(v) for v in value]
  return value.item() if isinstance(value, np.generic) else value


def _format(name: str, example: dict) -> dict:
  """The task's own text preprocessor applied to one example, in graph mode (tf.data)."""
  ds = _task(name).preprocessors[0](tf.data.Dataset.from_tensors(example))
  return {k: _decoded(v) for k, v in next(ds.as_numpy_iterator()).items()}


# ----------------------------------------------------------------------- registration


def test_every_task_is_registered_with_t5s_names_metrics_and_lengths():
  assert t5d.TASKS == tuple(METRICS)
  assert set(t5d.TFDS_NAMES) == set(t5d.TASKS)
  assert t5d.TFDS_NAMES["glue_cola_v002"] == "glue/cola:2.0.0"
  assert t5d.TFDS_NAMES["super_glue_wsc_v102"] == "super_glue/wsc.fixed:1.0.2"
  assert t5d.TFDS_NAMES["squad_v010_allanswers"] == "squad/v1.1:3.0.0"
  assert t5d.TFDS_NAMES["wmt14_ende_v003"] == "wmt14_translate/de-en:1.0.0"
  vocab_type = type(vocab_lib.default_vocabulary())
  for name in t5d.TASKS:
    task = _task(name)
    assert task.source.tfds_dataset.name == t5d.TFDS_NAMES[name]
    assert sorted(task.output_features) == ["inputs", "targets"]
    for feature in task.output_features.values():
      assert feature.add_eos and isinstance(feature.vocabulary, vocab_type)
    steps = task.preprocessors
    assert steps[1] is seqio.preprocessors.tokenize
    assert steps[2] is seqio.preprocessors.append_eos_after_trim
    scorers = [getattr(fn, "__wrapped__", fn) for fn in task.predict_metric_fns]
    assert scorers == METRICS[name], name
    assert any_task.DEFAULT_LENGTHS[name] == {"inputs": 512,
                                              "targets": TARGETS_LENGTHS[name]}, name
    assert "train" in task.splits
  assert _task("glue_mnli_v002").splits == (
      "train", "validation_matched", "validation_mismatched", "test_matched",
      "test_mismatched")
  assert "validation" in _task("glue_cola_v002").splits


def test_registering_reads_nothing_and_is_idempotent(monkeypatch):
  registered = {name: _task(name) for name in t5d.TASKS}
  for name in t5d.TASKS:
    seqio.TaskRegistry.remove(name)

  def refuse(*args, **kwargs):
    raise AssertionError("registration read or trained something")

  try:
    with monkeypatch.context() as mp:
      for target, attribute in ((tfds, "builder"), (tfds, "load"),
                                (vocab_lib, "train_sentencepiece"), (t5d, "is_prepared")):
        mp.setattr(target, attribute, refuse)
      t5d.register()
      fresh = {name: _task(name) for name in t5d.TASKS}
      t5d.register()  # again: nothing changes, nothing raises
      assert {name: _task(name) for name in t5d.TASKS} == fresh
  finally:  # other tests' objects stay the registered ones
    for name, task in registered.items():
      seqio.TaskRegistry.remove(name)
      seqio.TaskRegistry.add_provider(name, task)


# ------------------------------------------------------------------------ absent data


def test_check_prepared_is_one_line_naming_the_dataset_and_its_build_command(tmp_path):
  for name in t5d.TASKS:
    with pytest.raises(ConfigError) as err:
      t5d.check_prepared(name, str(tmp_path))
    message = str(err.value)
    tfds_name = t5d.TFDS_NAMES[name]
    assert "\n" not in message
    assert message.startswith(f"task {name} reads the TFDS dataset {tfds_name}, which is "
                              f"not prepared in {tmp_path}: ")
    assert f"`tfds build {tfds_name} --data_dir {tmp_path}`" in message
    # where TFDS itself would keep it (the builder from code: no I/O)
    builder = tfds.builder(tfds_name, data_dir=str(tmp_path))
    assert t5d.dataset_path(tfds_name, str(tmp_path)) == builder.data_path
  info = tmp_path / "glue" / "cola" / "2.0.0" / "dataset_info.json"
  info.parent.mkdir(parents=True)
  info.write_text("{}")
  t5d.check_prepared("glue_cola_v002", str(tmp_path))  # prepared: no error
  with pytest.raises(ConfigError, match="not one of the T5 downstream tasks"):
    t5d.check_prepared("glue_cola", str(tmp_path))


def test_reading_unprepared_data_stops_in_one_line_before_tfds_reads(tmp_path, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))

  def refuse(*args, **kwargs):
    raise AssertionError("TFDS was asked for the data")

  monkeypatch.setattr(seqio.utils.LazyTfdsLoader, "load", refuse)
  with pytest.raises(ConfigError, match=r"glue/rte:2\.0\.0, which is not prepared in "
                     + str(tmp_path)):
    _task("glue_rte_v002").get_dataset(None, split="validation", shuffle=False)
  with pytest.raises(ConfigError, match=f"not prepared in {tmp_path}"):
    t5d.check_prepared("glue_rte_v002")  # no dir: where the task reads


# ---------------------------------------------------------------------------- formats

RECORD_EXAMPLE = {
    "passage": b"Storms hit.\n@highlight\nRoads closed\n@highlight\nSchools shut!\n"
               b"@highlight\nMore rain", "query": b"@placeholder was flooded.",
    "entities": [b"Leeds", b"York"], "answers": [b"York", b"York city"],
    "idx": {"passage": 3, "query": 4}}
SQUAD_EXAMPLE = {
    "id": b"5733be", "title": b"Notre_Dame",
    "question": b"To whom did the Virgin Mary appear in 1858?",
    "context": b"It is a replica of the grotto at Lourdes, France where the Virgin Mary "
               b"reputedly appeared to Saint Bernadette Soubirous in 1858.",
    "answers": {"text": [b"Saint Bernadette Soubirous", b"St. Bernadette"],
                "answer_start": [102, 102]}}
FORMATS = [
    ("glue_cola_v002", {"sentence": b"The book was read.", "label": 1, "idx": 7},
     "cola sentence: The book was read.", "acceptable"),
    ("glue_cola_v002", {"sentence": b"Book the read.", "label": 0, "idx": 8},
     "cola sentence: Book the read.", "unacceptable"),
    ("glue_cola_v002", {"sentence": b"Unlabelled.", "label": -1, "idx": 9},
     "cola sentence: Unlabelled.", "<unk>"),
    ("glue_mnli_v002", {"premise": b"A man sleeps.", "hypothesis": b"A man rests.",
                        "label": 0, "idx": 0},
     "mnli hypothesis: A man rests. premise: A man sleeps.", "entailment"),
    ("glue_mnli_v002", {"premise": b"P.", "hypothesis": b"H.", "label": 2, "idx": 1},
     "mnli hypothesis: H. premise: P.", "contradiction"),
    ("glue_rte_v002", {"sentence1": b"Paris is in France.", "sentence2": b"Paris is French.",
                       "label": 1, "idx": 0},
     "rte sentence1: Paris is in France. sentence2: Paris is French.", "not_entailment"),
    ("super_glue_rte_v102", {"premise": b"Paris is in France.", "hypothesis": b"P is F.",
                             "label": 0, "idx": 0},
     "rte hypothesis: P is F. premise: Paris is in France.", "entailment"),
    ("super_glue_boolq_v102", {"question": b"is the sky blue", "passage": b"The sky is blue.",
                               "label": 1, "idx": 0},
     "boolq passage: The sky is blue. question: is the sky blue", "True"),
    ("super_glue_copa_v102", {"premise": b"The man broke his toe.", "choice1": b"He dropped a "
                              b"hammer.", "choice2": b"He got a hole.", "question": b"cause",
                              "label": 0, "idx": 0},
     "copa choice1: He dropped a hammer. choice2: He got a hole. premise: The man broke his "
     "toe. question: cause", "choice1"),
    ("super_glue_cb_v102", {"premise": b"P.", "hypothesis": b"H.", "label": 2, "idx": 0},
     "cb hypothesis: H. premise: P.", "neutral"),
    ("super_glue_wic_v102", {"word": b"bank", "sentence1": b"A river bank.",
                             "sentence2": b"A savings bank.", "start1": 8, "start2": 10,
                             "end1": 12, "end2": 14, "label": 0, "idx": 0},
     "wic sentence1: A river bank. sentence2: A savings bank. word: bank", "False"),
    ("super_glue_multirc_v102", {"paragraph": b"<b>Sent 1: </b>It rains.<br><b>Sent 2: </b>"
                                 b"Wet.<br>", "question": b"Is it wet?", "answer": b"Yes",
                                 "label": 1,
                                 "idx": {"paragraph": 0, "question": 1, "answer": 2}},
     "multirc question: Is it wet? answer: Yes paragraph: Sent 1: It rains. Sent 2: Wet. ",
     "True"),
    ("super_glue_wsc_v102", {"text": b"Mark told Pete many lies about himself, which Pete "
                             b"included in his book. He should have been more truthful.",
                             "span1_index": 0, "span2_index": 13, "span1_text": b"Mark",
                             "span2_text": b"He", "label": 1, "idx": 0},
     "wsc text: * Mark * told Pete many lies about himself, which Pete included in his "
     "book. # He # should have been more truthful.", "True"),
    ("super_glue_wsc_v102", {"text": b"The cup (blue) fell off it. It broke.",
                             "span1_index": 1, "span2_index": 0, "span1_text": b"cup (blue)",
                             "span2_text": b"The", "label": 0, "idx": 0},
     "wsc text: # The # * cup (blue) * fell off it. It broke.", "False"),
    ("super_glue_record_v102", RECORD_EXAMPLE,
     "record query: @placeholder was flooded. entities: Leeds, York passage: Storms hit. "
     "Roads closed. Schools shut! More rain", "York"),
    ("super_glue_record_v102", {"passage": b"P.", "query": b"Q @placeholder",
                                "entities": [b"A"], "answers": tf.constant([], tf.string),
                                "idx": {"passage": 0, "query": 0}},
     "record query: Q @placeholder entities: A passage: P.", "<unk>"),
    ("squad_v010_allanswers", SQUAD_EXAMPLE,
     "question: To whom did the Virgin Mary appear in 1858 ? context: It is a replica of "
     "the grotto at Lourdes , France where the Virgin Mary reputedly appeared to Saint "
     "Bernadette Soubirous in 1858 .", "Saint Bernadette Soubirous"),
    ("cnn_dailymail_v002", {"article": b"(CNN) A long article.", "highlights":
                            b"First point .\nSecond point .", "publisher": b"cnn", "id": b"1"},
     "summarize: (CNN) A long article.", "First point .\nSecond point ."),
    ("wmt14_ende_v003", {"en": b"Resumption of the session", "de":
                         "Wiederaufnahme der Sitzungsperiode, schön".encode()},
     "translate English to German: Resumption of the session",
     "Wiederaufnahme der Sitzungsperiode, schön"),
]


@pytest.mark.parametrize("name,example,inputs,targets", FORMATS,
                         ids=[f"{f[0]}-{i}" for i, f in enumerate(FORMATS)])
def test_t5_text_format(name, example, inputs, targets):
  out = _format(name, example)
  assert (out["inputs"], out["targets"]) == (inputs, targets)


@pytest.mark.parametrize("score,written", [(3.75, "3.8"), (0.0, "0.0"), (5.0, "5.0"),
                                           (2.33, "2.4"), (4.09, "4.0"), (1.1, "1.2"),
                                           (3.7, "3.6")])  # 18.5 fifths: half to even
def test_stsb_rounds_the_score_to_the_nearest_fifth(score, written):
  """TFDS stores the score as float32; its product with 5 rounds as T5's does."""
  out = _format("glue_stsb_v002", {"sentence1": b"A cat sits.", "sentence2": b"A cat is "
                                   b"sitting.", "label": score, "idx": 0})
  assert out == {"inputs": "stsb sentence1: A cat sits. sentence2: A cat is sitting.",
                 "targets": written, "idx": 0}


def test_squad_and_record_keep_every_answer_for_evaluation():
  squad = _format("squad_v010_allanswers", SQUAD_EXAMPLE)
  assert squad["answers"] == ["Saint Bernadette Soubirous", "St . Bernadette"]
  record = _format("super_glue_record_v102", RECORD_EXAMPLE)
  assert record["answers"] == ["York", "York city"]
  assert (record["idx/passage"], record["idx/query"]) == (3, 4)


PREFIXES = {  # how each task's inputs begin
    "glue_cola_v002": "cola sentence: ", "glue_sst2_v002": "sst2 sentence: ",
    "glue_mrpc_v002": "mrpc sentence1: ", "glue_qqp_v002": "qqp question1: ",
    "glue_stsb_v002": "stsb sentence1: ", "glue_mnli_v002": "mnli hypothesis: ",
    "glue_qnli_v002": "qnli question: ", "glue_rte_v002": "rte sentence1: ",
    "glue_wnli_v002": "wnli sentence1: ", "super_glue_boolq_v102": "boolq passage: ",
    "super_glue_cb_v102": "cb hypothesis: ", "super_glue_copa_v102": "copa choice1: ",
    "super_glue_multirc_v102": "multirc question: ",
    "super_glue_record_v102": "record query: ", "super_glue_rte_v102": "rte hypothesis: ",
    "super_glue_wic_v102": "wic sentence1: ", "super_glue_wsc_v102": "wsc text: ",
    "squad_v010_allanswers": "question: ", "cnn_dailymail_v002": "summarize: ",
    "wmt14_ende_v003": "translate English to German: ",
}


@pytest.mark.e2e
def test_every_task_reads_its_tfds_features_through_the_whole_pipeline(tfds_data_dir,
                                                                        monkeypatch):
  """Random examples from each builder's own features (mock_data), through the registered
  task: format, tokenize with the default vocabulary, EOS, within the task's lengths."""
  monkeypatch.setattr(t5d, "is_prepared", lambda tfds_name, data_dir: True)
  with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
    for name in t5d.TASKS:
      split = "validation_matched" if name == "glue_mnli_v002" else "validation"
      lengths = any_task.DEFAULT_LENGTHS[name]
      ds = _task(name).get_dataset(lengths, split=split, shuffle=False, num_epochs=1,
                                   try_in_mem_cache=False)  # mocks have no split sizes
      ex = next(ds.as_numpy_iterator())
      assert ex["inputs_pretokenized"].decode().startswith(PREFIXES[name]), name
      for key in ("inputs", "targets"):
        assert 1 < len(ex[key]) <= lengths[key] and ex[key][-1] == 1, (name, key)
      if name in t5d.LABELS:
        assert ex["targets_pretokenized"].decode() in t5d.LABELS[name], name


@pytest.mark.e2e
def test_every_label_fits_its_targets_length_with_eos(tfds_data_dir):
  vocabulary = vocab_lib.get_vocabulary(vocab_lib.VocabConfig(), data_dir=tfds_data_dir)
  for name, labels in {**t5d.LABELS, "glue_stsb_v002": ("0.0", "3.8", "5.0")}.items():
    for label in (*labels, "<unk>"):
      assert len(vocabulary.encode(label)) + 1 <= TARGETS_LENGTHS[name], (name, label)


# --------------------------------------------------------------------- postprocessing


def test_label_strings_map_back_to_their_index_and_unknown_to_minus_one():
  for name, labels in t5d.LABELS.items():
    post = _task(name).postprocess_fn
    for i, label in enumerate(labels):
      assert post(label, example={}, is_target=False) == i
      assert post(label.encode(), example={}, is_target=True) == i
    assert post("maybe", example={}, is_target=False) == -1
    assert post("<unk>", example={}, is_target=True) == -1
  stsb = _task("glue_stsb_v002").postprocess_fn
  assert stsb("3.8") == 3.8 and stsb(b"0.0") == 0.0 and stsb("similar") == -1.0


def test_squad_targets_become_every_answer_of_the_example():
  post = _task("squad_v010_allanswers").postprocess_fn
  example = {"answers": tf.constant(["Denver Broncos", "Broncos"]).numpy()}
  assert post("Denver Broncos", example=example, is_target=True) == ["Denver Broncos",
                                                                      "Broncos"]
  assert post(b"Broncos", example=example, is_target=False) == "Broncos"


# ---------------------------------------------------------------------------- metrics


def _evaluate(name: str, targets, predictions, examples=None) -> dict:
  """As seqio's Evaluator: postprocess targets and predictions, call every metric_fn."""
  task = _task(name)
  post = task.postprocess_fn or (lambda x, example=None, is_target=False: x)
  examples = examples or [{}] * len(targets)
  t = [post(x, example=e, is_target=True) for x, e in zip(targets, examples)]
  p = [post(x, example=e, is_target=False) for x, e in zip(predictions, examples)]
  scores = {}
  for fn in task.metric_fns:
    scores.update(fn(t, p))
  return scores


def _perfect_then_worse(name, targets, wrong, examples=None):
  perfect = _evaluate(name, targets, targets, examples)
  assert perfect and all(v == pytest.approx(100.0) for v in perfect.values()), perfect
  worse = _evaluate(name, targets, wrong, examples)
  assert set(worse) == set(perfect)
  assert all(worse[k] < 100.0 - 1e-6 for k in worse), worse
  return worse


def test_classification_metrics_are_wired():
  cola = ["acceptable", "unacceptable", "acceptable", "unacceptable"]
  assert set(_perfect_then_worse("glue_cola_v002", cola, cola[::-1])) == {"matthews_corrcoef"}
  mrpc = ["equivalent", "not_equivalent", "equivalent", "equivalent"]
  worse = _perfect_then_worse("glue_mrpc_v002", mrpc,
                              ["equivalent", "not_equivalent", "garbage", "equivalent"])
  assert worse == {"f1": pytest.approx(100 * 4 / 5), "accuracy": 75.0}  # garbage is wrong
  cb = ["entailment", "contradiction", "neutral", "neutral"]
  worse = _perfect_then_worse("super_glue_cb_v102", cb,
                              ["entailment", "contradiction", "neutral", "perhaps"])
  assert set(worse) == {"f1_macro", "accuracy"} and worse["accuracy"] == 75.0
  multirc = ["True", "False", "True", "False"]
  assert set(_perfect_then_worse("super_glue_multirc_v102", multirc,
                                 ["True", "True", "True", "False"])) == {"f1", "accuracy"}


def test_stsb_correlations_are_wired():
  targets = ["0.0", "1.2", "2.4", "3.8", "5.0"]
  worse = _perfect_then_worse("glue_stsb_v002", targets, ["0.0", "2.4", "1.2", "3.8", "oops"])
  assert set(worse) == {"pearson", "spearman"}


def test_answer_metrics_score_against_every_answer():
  examples = [{"answers": [b"Denver Broncos", b"Broncos"]}, {"answers": [b"1858"]}]
  targets = ["Denver Broncos", "1858"]
  for name in ("squad_v010_allanswers", "super_glue_record_v102"):
    assert _evaluate(name, targets, ["Broncos", "1858"], examples) == {
        "exact_match": 100.0, "f1": 100.0}  # the second answer counts
    worse = _perfect_then_worse(name, targets, ["the Panthers", "1858"], examples)
    assert worse == {"exact_match": 50.0, "f1": 50.0}


def test_generation_metrics_are_wired():
  summaries = ["The storm closed roads in York.\nSchools shut for two days.",
               "Prices rose again in May.\nBanks expect a rise in rates."]
  worse = _perfect_then_worse("cnn_dailymail_v002", summaries,
                              ["Roads closed.", "Banks lent more money in June."])
  assert set(worse) == {"rouge1", "rouge2", "rougeLsum"}
  german = ["Die Sitzung wird am Montag wieder aufgenommen .",
            "Ich erkläre die Sitzungsperiode des Parlaments für eröffnet ."]
  worse = _perfect_then_worse("wmt14_ende_v003", german,
                              ["Die Sitzung beginnt am Dienstag .",
                               "Ich erkläre die Sitzung für geschlossen ."])
  assert set(worse) == {"bleu"}
