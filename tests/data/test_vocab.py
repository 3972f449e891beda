"""Vocabularies: a deterministic SentencePiece model with T5 ids, mode tokens and sentinels."""
import contextlib
import os
import threading
import time

import gin
import pytest
import seqio

from objectax.data import pydocs
from objectax.data import vocab
from objectax.models.registry import ConfigError

SMALL_VOCAB = 500
EXTRA = 100


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
  """A model trained on a small subset of the corpus (the first 40 train documents)."""
  texts = [t for _, t in pydocs.split_documents("train")[:40]]
  path = str(tmp_path_factory.mktemp("spm") / "small.model")
  assert vocab.train_sentencepiece_on_texts(texts, SMALL_VOCAB, path) == path
  return path, texts


@pytest.fixture(scope="module")
def small_vocab(small_model):
  return seqio.SentencePieceVocabulary(small_model[0], extra_ids=EXTRA)


def test_training_is_deterministic(small_model, tmp_path):
  path, texts = small_model
  again = vocab.train_sentencepiece_on_texts(texts, SMALL_VOCAB, str(tmp_path / "again.model"))
  with open(path, "rb") as a, open(again, "rb") as b:
    assert a.read() == b.read()
  assert not [f for f in os.listdir(tmp_path) if "tmp" in f]  # written via tmp + replace


def test_t5_special_ids(small_vocab):
  sp = small_vocab.tokenizer
  assert (small_vocab.pad_id, small_vocab.eos_id, small_vocab.unk_id) == (0, 1, 2)
  assert [sp.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
  assert sp.bos_id() == -1


def test_mode_tokens_are_single_ids(small_vocab):
  ids = [small_vocab.encode(m) for m in vocab.MODE_TOKENS]
  assert ids == [[3], [4], [5]]  # right after pad, eos, unk
  assert [list(vocab.mode_token_ids(small_vocab, m)) for m in vocab.MODE_TOKENS] == ids
  for mode, mode_ids in zip(vocab.MODE_TOKENS, ids):
    # Leading a text, the token is its one id, not '[', 'NLU', ']'.
    encoded = small_vocab.encode(f"{mode} Return the value.")
    assert encoded[:1] == mode_ids and encoded.count(mode_ids[0]) == 1
    assert small_vocab.decode(encoded) == f"{mode} Return the value."
  with pytest.raises(ConfigError, match="valid choices: \\[NLU\\], \\[NLG\\], \\[S2S\\]"):
    vocab.mode_token_ids(small_vocab, "[XYZ]")


def test_sentinels_are_the_top_ids(small_vocab):
  assert small_vocab.vocab_size == SMALL_VOCAB + EXTRA
  top = small_vocab.vocab_size - 1
  assert small_vocab.encode("<extra_id_0>") == [top]
  assert small_vocab.encode(f"<extra_id_{EXTRA - 1}>") == [top - EXTRA + 1]
  assert small_vocab.decode([top, top - 1]) == "<extra_id_0> <extra_id_1>"
  # Ordinary text never maps into the sentinel range.
  ids = small_vocab.encode("The module docstring, then each function's docstring.")
  assert max(ids) < SMALL_VOCAB


def test_roundtrip_including_unseen_characters(small_vocab):
  for text in ["Return a new dictionary with keys from iterable.",
               "naïve café – 日本語 ✓"]:  # unseen scripts go through byte fallback
    ids = small_vocab.encode(text)
    assert small_vocab.unk_id not in ids
    assert small_vocab.decode(ids) == text


def test_byte_vocabulary():
  v = vocab.get_vocabulary(vocab.VocabConfig(kind="byte"))
  assert v.vocab_size == 3 + 256 + EXTRA
  assert v.decode(v.encode("héllo [NLU]")) == "héllo [NLU]"
  assert v.encode("A") == [ord("A") + 3]  # after pad, eos, unk
  assert len(vocab.mode_token_ids(v, "[NLU]")) == 5  # no such piece: its bytes


def test_bad_kind_lists_the_choices():
  with pytest.raises(ConfigError, match="unknown vocabulary kind 'bpe'; valid choices: "
                     "sentencepiece, byte"):
    vocab.get_vocabulary(vocab.VocabConfig(kind="bpe"))


def test_missing_user_model_fails_in_one_line(tmp_path):
  missing = str(tmp_path / "nope.model")
  with pytest.raises(ConfigError) as e:
    vocab.get_vocabulary(vocab.VocabConfig(sentencepiece_model=missing))
  assert missing in str(e.value) and "\n" not in str(e.value)


def test_user_model_is_used(small_model):
  v = vocab.get_vocabulary(vocab.VocabConfig(sentencepiece_model=small_model[0]))
  assert v.vocab_size == SMALL_VOCAB + EXTRA


def test_too_large_vocab_fails_in_one_line(tmp_path):
  with pytest.raises(ConfigError, match="vocab_size=5000") as e:
    vocab.train_sentencepiece_on_texts(["only a few words here"] * 10, 5000,
                                       str(tmp_path / "x.model"))
  assert "\n" not in str(e.value)


@pytest.mark.e2e
def test_default_trains_on_the_embedded_corpus_and_caches(tmp_path, capsys):
  data_dir = str(tmp_path)
  cfg = vocab.VocabConfig(vocab_size=1000)
  v = vocab.get_vocabulary(cfg, data_dir=data_dir)
  out = capsys.readouterr().out
  assert "training a SentencePiece unigram model (1000 pieces)" in out
  path = vocab.spm_model_path(data_dir, 1000)
  # Cached beside the TFDS files of the corpus.
  assert os.path.dirname(path) == pydocs.dataset_dir(data_dir)
  assert os.path.exists(os.path.join(os.path.dirname(path), "dataset_info.json"))
  assert v.vocab_size == 1000 + EXTRA
  # Subwords compress in-domain prose: well under one id per 3 characters.
  text = "Return the number of items in a container."
  assert len(v.encode(text)) < len(text) / 3
  mtime = os.stat(path).st_mtime_ns
  vocab.get_vocabulary(cfg, data_dir=data_dir)
  assert os.stat(path).st_mtime_ns == mtime
  assert "training" not in capsys.readouterr().out
  os.remove(path)  # rebuilt when missing, to the same bytes
  vocab.train_sentencepiece(data_dir, 1000)
  assert os.path.exists(path)


def test_gin_selects_the_kind():
  gin.clear_config()
  try:
    gin.parse_config(["VocabConfig.kind = 'byte'", "VocabConfig.extra_ids = 7"])
    v = vocab.get_vocabulary()
    assert isinstance(v, seqio.ByteVocabulary) and v.vocab_size == 3 + 256 + 7
  finally:
    gin.clear_config()


def _race_to_train(monkeypatch, data_dir):
  """Two workers (threads: flock excludes open files, not processes) want the same model.

  Returns how many trained. Building the corpus is stubbed out; training is a fake that
  takes long enough for the second worker to find no model yet.
  """
  monkeypatch.setattr(pydocs, "ensure_built", pydocs.resolve_data_dir)
  calls = []

  def fake_train(data_dir, vocab_size, path):
    calls.append(path)
    time.sleep(0.5)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(b"model")
    return path

  monkeypatch.setattr(vocab, "_train_on_corpus", fake_train)
  barrier, results = threading.Barrier(2), []

  def worker():
    barrier.wait()
    results.append(vocab.train_sentencepiece(data_dir, 700))

  threads = [threading.Thread(target=worker) for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=60)
  assert results == [vocab.spm_model_path(data_dir, 700)] * 2
  return len(calls)


def test_racing_workers_train_once(monkeypatch, tmp_path):
  assert _race_to_train(monkeypatch, str(tmp_path / "locked")) == 1
  # Without the lock both train: the race above is real, and the lock is what stops it.
  monkeypatch.setattr(pydocs, "file_lock", lambda *a: contextlib.nullcontext())
  assert _race_to_train(monkeypatch, str(tmp_path / "unlocked")) == 2
