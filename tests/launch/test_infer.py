"""`objectax infer`: every example of a task decoded by a run and written as JSON lines; and
`generate --mode` / `--infill` on a UL2 encoder-decoder run, end to end."""
import json
import os

import pytest

from objectax.launch import main


def _lines(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def trained_ul2(tfds_data_dir, tmp_path_factory):
  """A UL2 encoder-decoder run trained a few steps (mode tokens and sentinels)."""
  from objectax.launch import configure, train  # pylint: disable=g-import-not-at-top
  wd = tmp_path_factory.mktemp("ul2") / "wd"
  configure.parse(["run/quickstart.gin"], [
      "Experiment.arch='encoder_decoder'", "Experiment.objective='ul2'",
      "TrainConfig.steps=4", "TrainConfig.checkpoint_every=4", "TrainConfig.eval_every=4",
      "TrainConfig.batch_size=8", "TrainConfig.eval_batches=1", "TrainConfig.warmup_steps=2",
      "TrainConfig.learning_rate=1e-2", "Experiment.sequence_length=64"])
  train.train(str(wd), quiet=True)
  return str(wd)


@pytest.mark.e2e
def test_infer_writes_every_example_whatever_the_batch(trained_quickstart, capsys):
  """A language-modelling task: the first half of each example is continued; the file has
  every example in order, and the predictions, sampled ones included, do not depend on the
  batch size (each example samples with a key of its own)."""
  wd = str(trained_quickstart)
  files = {}
  for batch, flags in ((2, []), (5, []), (2, ["--temperature", "1", "--seed", "3"]),
                       (5, ["--temperature", "1", "--seed", "3"])):
    assert main.run(["infer", f"--workdir={wd}", "--task", "pydocs_full_lm",
                     "--max_examples", "5", "--batch_size", str(batch),
                     "--max_new_tokens", "8", *flags]) == 0
    captured = capsys.readouterr()
    path = captured.out.strip()
    assert path == os.path.join(wd, "infer", "pydocs_full_lm_validation_12.jsonl")
    assert "5/5 examples" in captured.err and "ETA" in captured.err
    files[(batch, bool(flags))] = _lines(path)
  greedy = files[(2, False)]
  assert [r["index"] for r in greedy] == list(range(5))
  assert all(r["inputs"] and r["targets"] and r["prediction"] for r in greedy)
  assert files[(5, False)] == greedy
  assert files[(5, True)] == files[(2, True)]
  assert [r["prediction"] for r in files[(2, True)]] != [r["prediction"] for r in greedy]


@pytest.mark.e2e
def test_infer_a_mixture_writes_one_file_per_task_and_matches_generate(trained_ul2, capsys):
  """UL2's mixture: one file per denoiser, each input led by its mode token as training
  reads it; the S-denoiser's prediction is what `generate --mode S2S` prints for the same
  text."""
  assert main.run(["infer", f"--workdir={trained_ul2}", "--task", "pydocs_ul2",
                   "--max_examples", "2", "--max_new_tokens", "6"]) == 0
  paths = capsys.readouterr().out.split()
  names = sorted(os.path.basename(p).split("_validation")[0] for p in paths)
  assert names == [f"pydocs_ul2_{d}" for d in ("r1", "r2", "s", "x1", "x2", "x3", "x4")]
  modes = {"r": "[NLU]", "x": "[NLG]", "s": "[S2S]"}
  for path in paths:
    denoiser = os.path.basename(path).split("_")[2]
    rows = _lines(path)
    assert len(rows) == 2
    assert all(r["inputs"].startswith(modes[denoiser[0]]) for r in rows), (path, rows[0])
  s_row = _lines([p for p in paths if "_ul2_s_" in p][0])[0]
  prompt = s_row["inputs"][len("[S2S]"):].strip()
  assert main.run(["generate", f"--workdir={trained_ul2}", "--mode", "S2S", "--prompt",
                   prompt, "--max_new_tokens", "6"]) == 0
  out = capsys.readouterr().out
  assert f"output: {s_row['prediction']}\n" in out


@pytest.mark.e2e
def test_generate_fills_blanks_with_an_encoder_decoder(trained_ul2, capsys):
  """--infill on a sentinel-trained encoder-decoder: the markers are gone and the text
  around them kept; --mode on a UL2 run is accepted, a bad one refused in one line."""
  text = "Thank you <X> me to your party <Y> week."
  assert main.run(["generate", f"--workdir={trained_ul2}", "--infill", text, "--mode", "NLU",
                   "--max_new_tokens", "8"]) == 0
  out = capsys.readouterr().out
  filled = out.split("output: ")[1].splitlines()[0]
  assert filled.startswith("Thank you") and filled.endswith("week.")
  assert "<X>" not in filled and "<Y>" not in filled and "me to your party" in filled
  assert main.run(["generate", f"--workdir={trained_ul2}", "--prompt", "def ",
                   "--mode", "NLX"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "NLU, NLG, S2S" in err[0]
