"""`objectax vocab train`: the default vocabulary's recipe on the configured corpus, and the
fingerprint a checkpoint records so a resume with another vocabulary is refused."""
import json

import pytest
import seqio

from objectax.data import vocab
from objectax.launch import main


def _lines(capsys):
  captured = capsys.readouterr()
  return captured.out, [l for l in captured.err.splitlines() if l.strip()]


@pytest.mark.e2e
def test_vocab_train_on_a_local_corpus_keeps_the_recipe(tfds_data_dir, tmp_path, capsys):
  from objectax.data import pydocs  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  docs = [ex["text"].decode() for ex in tfds.as_numpy(tfds.builder(
      pydocs.TFDS_NAME, data_dir=tfds_data_dir).as_dataset(split="train"))][:120]
  corpus = tmp_path / "corpus.jsonl"
  corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
  train_docs = [d for d in docs if not pydocs.is_validation(d)]  # the 5% hash holdout
  models = []
  for name in ("a.model", "b.model"):
    out = tmp_path / name
    code = main.run(["vocab", "train", f"--out={out}", "--gin.Experiment.corpus=local",
                     f"--gin.LocalTextConfig.train_glob={corpus}",
                     "--gin.VocabConfig.vocab_size=1000"])
    stdout, err = _lines(capsys)
    assert code == 0, err
    assert f"wrote {out} from {len(train_docs)} documents" in stdout, stdout
    models.append(out.read_bytes())
  assert models[0] == models[1]  # deterministic
  v = seqio.SentencePieceVocabulary(str(tmp_path / "a.model"), extra_ids=100)
  assert v.vocab_size == 1100 and (v.pad_id, v.eos_id, v.unk_id) == (0, 1, 2)
  assert [v.encode(m) for m in ("[NLU]", "[NLG]", "[S2S]")] == [[3], [4], [5]]
  text = "def f(x): return x ** 2 # ünïcödé"
  assert v.decode(v.encode(text)) == text  # byte fallback: nothing becomes <unk>

  code = main.run(["vocab", "train", "--gin.Experiment.corpus=local",
                   f"--gin.LocalTextConfig.train_glob={corpus}"])
  _, err = _lines(capsys)
  assert code == 2 and len(err) == 1 and "needs --out=PATH" in err[0], err


def test_the_fingerprint_tells_vocabularies_apart_by_content(tmp_path):
  texts = lambda tag: [" ".join(f"{tag}{i}word{j}" for j in range(12)) for i in range(300)]
  one = vocab.train_sentencepiece_on_texts(texts("alpha"), 295, str(tmp_path / "one.model"))
  two = vocab.train_sentencepiece_on_texts(texts("omega"), 295, str(tmp_path / "two.model"))
  prints = {vocab.fingerprint(seqio.SentencePieceVocabulary(p, extra_ids=100)) for p in (one, two)}
  assert len(prints) == 2 and all(p.startswith("sentencepiece:") for p in prints)
  same = vocab.fingerprint(seqio.SentencePieceVocabulary(one, extra_ids=100))
  assert same in prints  # the bytes, not the object or the path
  assert vocab.fingerprint(seqio.ByteVocabulary(extra_ids=100)) == "ByteVocabulary+100"
