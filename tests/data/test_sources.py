"""The corpus registry: lazy, offline sources; one-line errors; local files split stably."""
import json
import socket

import gin
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from objectax.data import pydocs
from objectax.data import sources
from objectax.models.registry import ConfigError

TFDS_CORPORA = {"c4": "c4/en:3.1.0", "wikipedia": "wikipedia/20230601.en:1.0.0",
                "lm1b": "lm1b:1.1.0"}


@pytest.fixture
def no_network(monkeypatch):
  """Any attempt to open a connection fails the test."""
  def refuse(*args, **kwargs):
    raise AssertionError(f"network touched: {args}")
  monkeypatch.setattr(socket.socket, "connect", refuse)
  monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture
def empty_tfds_dir(tmp_path, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  return str(tmp_path)


def _texts(source, split, **kwargs):
  return [ex["text"].decode() for ex in
          source.get_dataset(split, shuffle=False, **kwargs).as_numpy_iterator()]


def test_registry_names_and_typo():
  assert sources.CORPORA.names() == ["pydocs", "c4", "wikipedia", "lm1b", "local", "prompted"]
  with pytest.raises(ConfigError, match="unknown corpus 'c5'; valid choices: pydocs, c4"):
    sources.get_corpus("c5")


def test_tfds_names_are_versions_this_tfds_knows(no_network, empty_tfds_dir):
  for name, tfds_name in TFDS_CORPORA.items():
    builder = tfds.builder(tfds_name, data_dir=empty_tfds_dir)
    assert builder.info.full_name == tfds_name.replace(":", "/")
    assert "text" in builder.info.features
    assert sources.get_corpus(name).text_key == "text"


def test_sources_are_lazy_and_offline(no_network, empty_tfds_dir, clean_gin):
  with pytest.raises(AssertionError, match="network touched"):
    socket.create_connection(("127.0.0.1", 9))  # the guard itself works
  for name in sources.CORPORA.names():
    source = sources.get_corpus(name).make_source()
    assert isinstance(source, seqio.DataSource)
    assert set(source.splits) == {"train", "validation"}


def test_missing_tfds_data_fails_in_one_line(no_network, empty_tfds_dir):
  for name, tfds_name in TFDS_CORPORA.items():
    with pytest.raises(ConfigError) as e:
      sources.get_corpus(name).prepare()
    message = str(e.value)
    assert tfds_name in message and empty_tfds_dir in message and "tfds build" in message
    assert "\n" not in message


def test_gin_binding_sets_the_tfds_dir(tmp_path, empty_tfds_dir, clean_gin):
  gin.parse_config([f"TfdsConfig.data_dir = '{tmp_path / 'bound'}'"])
  assert sources.tfds_data_dir() == str(tmp_path / "bound")
  with pytest.raises(ConfigError, match="bound"):
    sources.get_corpus("lm1b").prepare()


@pytest.mark.e2e
def test_pydocs_corpus_builds_and_reads(no_network, empty_tfds_dir, clean_gin):
  corpus = sources.get_corpus("pydocs")
  corpus.prepare()
  assert pydocs.is_built(empty_tfds_dir)
  texts = _texts(corpus.make_source(), "validation")
  assert len(texts) > 5 and all(len(t) >= pydocs.MIN_CHARS for t in texts)


# ---------------------------------------------------------------------------- local

@pytest.fixture
def local_files(tmp_path):
  txt = [f"plain line {i} about the parser." for i in range(120)]
  jsonl = [f"json record {i} on the tokenizer." for i in range(80)]
  (tmp_path / "a.txt").write_text("\n".join(txt[:60]) + "\n\n   \n" + "\n".join(txt[60:]) + "\n")
  (tmp_path / "b.jsonl").write_text(
      "\n".join(json.dumps({"body": t, "id": i}) for i, t in enumerate(jsonl)) + "\n")
  return tmp_path, txt, jsonl


def test_local_reads_txt_and_jsonl_and_holds_out_by_hash(local_files, clean_gin):
  path, txt, jsonl = local_files
  # Source made before the bindings: they are read when the dataset is built.
  source = sources.get_corpus("local").make_source()
  gin.parse_config([f"LocalTextConfig.train_glob = '{path}/*'",
                    "LocalTextConfig.text_key = 'body'"])
  sources.get_corpus("local").prepare()
  train, validation = _texts(source, "train"), _texts(source, "validation")
  assert sorted(train + validation) == sorted(txt + jsonl)  # blank lines skipped
  assert not set(train) & set(validation)
  assert validation and len(validation) < 0.15 * len(train + validation)
  assert all(pydocs.is_validation(t) for t in validation)
  assert train == [t for t in txt + jsonl if not pydocs.is_validation(t)]  # file order
  shuffled = _texts(source, "train", seed=1)
  assert sorted(shuffled) == sorted(train)


def test_local_validation_glob(local_files, clean_gin):
  path, txt, jsonl = local_files
  gin.parse_config([f"LocalTextConfig.train_glob = '{path}/*.txt'",
                    f"LocalTextConfig.validation_glob = '{path}/*.jsonl'",
                    "LocalTextConfig.text_key = 'body'"])
  source = sources.get_corpus("local").make_source()
  assert _texts(source, "train") == txt
  assert _texts(source, "validation") == jsonl


def test_local_errors_are_one_line(local_files, clean_gin):
  path, _, _ = local_files
  corpus = sources.get_corpus("local")
  with pytest.raises(ConfigError, match="needs LocalTextConfig.train_glob"):
    corpus.prepare()
  gin.parse_config([f"LocalTextConfig.train_glob = '{path}/*.csv'"])
  with pytest.raises(ConfigError, match="matches no files"):
    corpus.make_source().get_dataset("train", shuffle=False)
  gin.parse_config([f"LocalTextConfig.train_glob = '{path}/*.jsonl'"])  # key is 'body'
  with pytest.raises(ConfigError, match="no key 'text'"):
    corpus.prepare()


def test_local_iterator_position_checkpoints(local_files, clean_gin, tmp_path):
  path, _, _ = local_files
  gin.parse_config([f"LocalTextConfig.train_glob = '{path}/*'",
                    "LocalTextConfig.text_key = 'body'"])
  make = lambda: sources.get_corpus("local").make_source().get_dataset("train", shuffle=False)
  it = iter(make())
  for _ in range(110):  # past the end of a.txt, into b.jsonl
    next(it)
  saved = tf.train.Checkpoint(it=it).write(str(tmp_path / "ckpt" / "it"))
  expected = [next(it)["text"].numpy() for _ in range(5)]
  restored = iter(make())
  tf.train.Checkpoint(it=restored).read(saved).assert_consumed()
  assert [next(restored)["text"].numpy() for _ in range(5)] == expected


def _ops(ds):
  """Every op in the dataset's graph, its functions (map, filter, flat_map) included."""
  graph = tf.compat.v1.GraphDef()
  graph.ParseFromString(ds._as_serialized_graph().numpy())
  return {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}


def test_local_txt_needs_no_python(local_files, clean_gin):
  path, txt, jsonl = local_files
  gin.parse_config([f"LocalTextConfig.train_glob = '{path}/*.txt'",
                    f"LocalTextConfig.validation_glob = '{path}/*.jsonl'",
                    "LocalTextConfig.text_key = 'body'"])
  source = sources.get_corpus("local").make_source()
  train = source.get_dataset("train", shuffle=False)
  assert "TextLineDataset" in _ops(train)
  assert not {op for op in _ops(train) if "PyFunc" in op}
  assert [ex["text"].decode() for ex in train.as_numpy_iterator()] == txt
  # JSON lines do go through Python (the check above can see a py_function).
  assert {op for op in _ops(source.get_dataset("validation", shuffle=False)) if "PyFunc" in op}


@pytest.fixture
def many_files(tmp_path):
  docs = [[f"file {i} document {j} of the corpus." for j in range(4)] for i in range(3)]
  for i, lines in enumerate(docs):
    (tmp_path / f"f{i}.txt").write_text("\n".join(lines) + "\n")
  return tmp_path, docs


def _task(source):
  # Not registered: only data/tasks.py registers tasks; this one probes seqio's sharding.
  feature = seqio.Feature(seqio.PassThroughVocabulary(1), dtype=tf.string, add_eos=False,
                          rank=0)
  return seqio.Task("local_shard_probe", source, output_features={"text": feature},
                    preprocessors=[])


def test_local_hosts_read_their_own_files(many_files, clean_gin):
  path, docs = many_files
  gin.parse_config([f"LocalTextConfig.train_glob = '{path}/*.txt'",
                    f"LocalTextConfig.validation_glob = '{path}/f0.txt'"])
  source = sources.get_corpus("local").make_source()
  assert source.list_shards("train") == [str(path / f"f{i}.txt") for i in range(3)]
  assert not source.supports_arbitrary_sharding
  task = _task(source)

  def shard(i, n, shuffle=False):
    ds = task.get_dataset(sequence_length=None, split="train", shuffle=shuffle, seed=3,
                          shard_info=seqio.ShardInfo(i, n))
    return [ex["text"].decode() for ex in ds.as_numpy_iterator()]

  # 3 files, 2 hosts: whole files per host (sharded before the shuffle, so hosts agree).
  assert shard(0, 2) == docs[0] + docs[2] and shard(1, 2) == docs[1]
  assert sorted(shard(0, 2, shuffle=True)) == sorted(docs[0] + docs[2])
  # 3 files, 4 hosts: every host reads all files and keeps every 4th document.
  four = [shard(i, 4) for i in range(4)]
  assert four[1] == [d[1] for d in docs]
  assert sorted(sum(four, [])) == sorted(sum(docs, []))
  # The source shards by itself too, for callers that bypass seqio.Task.
  direct = [[ex["text"].decode() for ex in source.get_dataset(
      "train", shuffle=False, shard_info=seqio.ShardInfo(i, 4)).as_numpy_iterator()]
            for i in range(4)]
  assert direct == four


def test_local_hash_split_is_sharded_consistently(many_files, clean_gin):
  path, docs = many_files
  gin.parse_config([f"LocalTextConfig.train_glob = '{path}/*.txt'"])
  source = sources.get_corpus("local").make_source()
  every = sum(docs, [])
  for split, want in (("train", False), ("validation", True)):
    parts = [_texts(source, split, shard_info=seqio.ShardInfo(i, 2)) for i in range(2)]
    expected = sorted(t for t in every if pydocs.is_validation(t) == want)
    assert expected and sorted(sum(parts, [])) == expected  # 2 of the 12 are held out


# ------------------------------------------------------- bad records and too-few documents

def _local(**cfg):
  return sources.LocalTextSource(sources.LocalTextConfig(**cfg))


def _read_all(source, split="train"):
  """Every document of `split`, read the way the trainer reads (a bad record: ConfigError)."""
  from objectax.launch import input_pipeline  # pylint: disable=g-import-not-at-top
  ds = source.get_dataset(split, shuffle=False)
  return input_pipeline.read_records(
      lambda: [ex["text"].decode() for ex in ds.as_numpy_iterator()])


def _task_input(source):
  from objectax.launch import input_pipeline  # pylint: disable=g-import-not-at-top
  return input_pipeline.TaskInput(task=_task(source), task_feature_lengths={},
                                  feature_converter=None, vocabulary=None, lengths=None,
                                  corpus="local")


def _check_splits(source, input_shards=0, batch_size=8):
  from objectax.launch import input_pipeline  # pylint: disable=g-import-not-at-top
  input_pipeline.check_splits(_task_input(source), batch_size, input_shards)


def _jsonl(path, lines):
  path.write_text("".join(line + "\n" for line in lines))
  return str(path)


def _good(i):
  return json.dumps({"text": f"good record {i} of the corpus."})


def test_local_broken_json_names_file_and_line(tmp_path, clean_gin):
  bad = _jsonl(tmp_path / "b.jsonl", [_good(0), _good(1), '{"text": "cut off', _good(3)])
  _jsonl(tmp_path / "a.jsonl", [_good(i) for i in range(10, 15)])
  source = _local(train_glob=bad, validation_glob=f"{tmp_path}/a.jsonl")
  sources.get_corpus("local").prepare(sources.DataConfig(sources.TfdsConfig(), source.cfg))
  assert len(_read_all(source, "validation")) == 5
  with pytest.raises(ConfigError) as e:
    _read_all(source)
  message = str(e.value)
  assert message.startswith(f"{bad}:3: not JSON (") and "\n" not in message
  assert message.endswith(
      "(LocalTextConfig.bad_records='skip' skips such records and counts them)")
  assert sources.BAD_RECORD_MARKER not in message
  # Through a seqio task and check_splits too (it reads the first batch of lines).
  with pytest.raises(ConfigError, match=f"^{bad}:3: not JSON") as e:
    _check_splits(source)
  assert "\n" not in str(e.value)


def test_local_record_without_text_names_file_and_line(tmp_path, clean_gin):
  bad = _jsonl(tmp_path / "a.jsonl", [_good(0), json.dumps({"body": "no text here"}), _good(2)])
  source = _local(train_glob=bad, validation_glob=bad)
  with pytest.raises(ConfigError) as e:
    _read_all(source, "validation")
  assert str(e.value).startswith(f"{bad}:2: no key 'text' (")
  assert "\n" not in str(e.value)


def test_local_bad_record_stops_the_training_stream_in_one_line(tmp_path, clean_gin):
  from objectax.launch import input_pipeline  # pylint: disable=g-import-not-at-top
  lines = [_good(i) for i in range(300)] + ["[1, 2]"]  # past the first batch of lines
  bad = _jsonl(tmp_path / "a.jsonl", lines)
  source = _local(train_glob=bad, validation_glob=bad)
  _check_splits(source)  # only the first batch of lines is read: not seen yet
  stream = object.__new__(input_pipeline.TrainStream)
  stream._pending = []  # pylint: disable=protected-access
  stream._iterator = iter(  # pylint: disable=protected-access
      source.get_dataset("train", shuffle=False).batch(100))
  for _ in range(2):  # documents 1-200; the third batch needs line 301's batch of lines
    next(stream)
  with pytest.raises(ConfigError, match=f"^{bad}:301: not a JSON object but an array "):
    next(stream)


def test_read_records_passes_other_errors(clean_gin):
  from objectax.launch import input_pipeline  # pylint: disable=g-import-not-at-top
  ds = tf.data.Dataset.from_tensor_slices(["1", "x"]).map(tf.strings.to_number)
  with pytest.raises(tf.errors.InvalidArgumentError):
    input_pipeline.read_records(lambda: list(ds.as_numpy_iterator()))


def test_local_skip_mode_drops_and_counts_bad_records(tmp_path, clean_gin):
  a = _jsonl(tmp_path / "a.jsonl", [_good(0), "not json", _good(1), json.dumps({"text": 5}),
                                    "", json.dumps({"body": "x"})])
  b = _jsonl(tmp_path / "b.jsonl", [_good(2), "null"])
  c = _jsonl(tmp_path / "c.jsonl", [_good(3)])
  source = _local(train_glob=f"{tmp_path}/*.jsonl", validation_glob=c, bad_records="skip")
  sources.get_corpus("local").prepare(sources.DataConfig(sources.TfdsConfig(), source.cfg))
  expected = [f"good record {i} of the corpus." for i in range(4)]
  assert _read_all(source) == expected
  assert _read_all(source) == expected  # read again: the same records, counted once
  skipped = sources.skipped_records()
  assert skipped[a] == 3 and skipped[b] == 1 and c not in skipped
  _check_splits(source)
  assert sources.skipped_records()[a] == 3


def test_bad_records_setting_is_checked(clean_gin):
  with pytest.raises(ConfigError) as e:
    sources.LocalTextConfig(train_glob="x", bad_records="ignore")
  # gin appends the configurable's name on a line of its own; the CLI prints the first.
  assert str(e.value).splitlines()[0] == ("LocalTextConfig.bad_records='ignore' is not "
                                          "valid; valid choices: error, skip")


def test_local_empty_file_among_good_ones_is_fine(tmp_path, clean_gin):
  (tmp_path / "a.txt").write_text("first document of the corpus.\nsecond one.\n")
  (tmp_path / "b.txt").write_text("")
  _jsonl(tmp_path / "c.jsonl", [])
  _jsonl(tmp_path / "d.jsonl", [_good(0), _good(1)])
  source = _local(train_glob=f"{tmp_path}/*", validation_glob=f"{tmp_path}/d.jsonl")
  sources.get_corpus("local").prepare(sources.DataConfig(sources.TfdsConfig(), source.cfg))
  assert _read_all(source) == ["first document of the corpus.", "second one.",
                               "good record 0 of the corpus.", "good record 1 of the corpus."]
  _check_splits(source)
  # 2 shards of train: a.txt, c.jsonl and b.txt, d.jsonl; of validation: a document each.
  _check_splits(source, input_shards=2)
  source = _local(train_glob=f"{tmp_path}/*", validation_glob=f"{tmp_path}/[cd].jsonl")
  with pytest.raises(ConfigError, match="input shard 0 .* the validation split has 0 "):
    _check_splits(source, input_shards=2)  # a shard of whole files, all empty


def test_check_splits_empty_file(tmp_path, clean_gin):
  empty = _jsonl(tmp_path / "empty.jsonl", [])
  with pytest.raises(ConfigError) as e:
    _check_splits(_local(train_glob=empty))
  message = str(e.value)
  assert "\n" not in message
  assert message.startswith("corpus 'local': the train split has 0 documents, fewer than "
                            "the 1 it needs; add documents to LocalTextConfig.train_glob=")


def test_check_splits_too_few_for_the_hash_split(tmp_path, clean_gin):
  docs = [f"tiny corpus document number {i}." for i in range(3)]
  assert not any(pydocs.is_validation(d) for d in docs)
  (tmp_path / "a.txt").write_text("\n".join(docs) + "\n")
  with pytest.raises(ConfigError) as e:
    _check_splits(_local(train_glob=f"{tmp_path}/*.txt"))
  message = str(e.value)
  assert "\n" not in message
  assert message.startswith("corpus 'local': the validation split has 0 documents, fewer "
                            "than the 1 it needs; ")
  assert "about 1 in 20 of its 3 documents" in message
  assert "set LocalTextConfig.validation_glob" in message


def test_check_splits_per_input_shard(tmp_path, clean_gin):
  (tmp_path / "a.txt").write_text("the one document.\n")
  (tmp_path / "b.txt").write_text("\n")
  source = _local(train_glob=f"{tmp_path}/*.txt", validation_glob=f"{tmp_path}/a.txt")
  _check_splits(source, input_shards=1)
  with pytest.raises(ConfigError) as e:  # 2 files, 2 shards: shard 1 reads b.txt alone
    _check_splits(source, input_shards=2)
  message = str(e.value)
  assert "\n" not in message
  assert message.startswith(
      "corpus 'local': input shard 1 (of 2, TrainConfig.input_shards) of the train split "
      "has 0 documents, fewer than the 1 each needs; the split has 1 in all; add documents "
      "to LocalTextConfig.train_glob=")
  assert message.endswith(", or lower TrainConfig.input_shards")


def test_check_splits_shards_of_documents(tmp_path, clean_gin):
  from objectax.launch import input_pipeline  # pylint: disable=g-import-not-at-top
  docs = [f"document {i} of a one-file corpus." for i in range(5)]
  (tmp_path / "a.txt").write_text("\n".join(docs) + "\n")
  source = _local(train_glob=f"{tmp_path}/a.txt", validation_glob=f"{tmp_path}/a.txt")
  # Fewer files than shards: shard i keeps documents i, i + n, ...; one count of the
  # first documents says what each shard holds, as reading each shard does.
  for shards in (2, 4, 8):
    indices = range(shards)
    for need in (1, 2):
      assert input_pipeline._count_shards(source, "train", indices, shards, need) == [  # pylint: disable=protected-access
          min(need, sources.count_documents(source.get_dataset(
              "train", shuffle=False, shard_info=seqio.ShardInfo(i, shards)), 100))
          for i in indices]
  _check_splits(source, input_shards=4)
  with pytest.raises(ConfigError) as e:
    _check_splits(source, input_shards=8)
  assert str(e.value).startswith(
      "corpus 'local': input shard 5 (of 8, TrainConfig.input_shards) of the train split "
      "has 0 documents, fewer than the 1 each needs; the split has 5 in all; ")
  assert "\n" not in str(e.value)
