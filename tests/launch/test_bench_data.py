"""`objectax bench data` measures each objective on the pre-tokenized embedded corpus."""
import pytest

from objectax.launch import main
from objectax.launch.tools import bench_data


@pytest.mark.e2e
def test_bench_data_prints_one_row_per_objective(tfds_data_dir, capsys):
  lines = []
  results = bench_data.run(budget=128, seconds=0.3, objectives=["full_lm", "span_corruption"],
                           out=lines.append)
  assert [r.objective for r in results] == ["full_lm", "span_corruption"]
  for r in results:
    assert r.examples_per_second > 0
    # Source tokens are the corpus tokens of the timed passes; for these exact objectives
    # that is examples x raw length, up to the per-document EOS of full LM (412 documents
    # in about 0.5M tokens) and the remainder dropped at the very end.
    ratio = r.examples_per_second * r.lengths.raw / r.source_tokens_per_second
    assert 0.99 < ratio < 1.01, ratio
  assert len(lines) == 4 and lines[2].startswith("full_lm") and lines[3].startswith("span_corruption")
  assert "104" in lines[3] and "24" in lines[3]  # budget 128 -> inputs 104 + targets 24


def test_bench_rejects_unknown_objective_in_one_line(capsys):
  assert main.run(["bench", "data", "--objective", "spam"]) == 2
  err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert len(err) == 1 and "unknown objective 'spam'; valid choices: full_lm" in err[0]


@pytest.mark.e2e
def test_bench_counts_consumed_tokens_for_varying_and_mixture_objectives(tfds_data_dir):
  results = bench_data.run(budget=128, seconds=0.3, objectives=["t5_prefix_lm", "ul2"],
                           out=lambda *_: None)
  t5, ul2 = results
  # T5's prefix LM: document tails make examples shorter than the raw bound, so counting
  # examples x raw would overstate the tokens consumed.
  assert 0 < t5.source_tokens_per_second < t5.examples_per_second * t5.lengths.raw
  # UL2: a mixture of components with their own raw lengths, all below the mixture's bound.
  assert 0 < ul2.source_tokens_per_second <= ul2.examples_per_second * ul2.lengths.raw
