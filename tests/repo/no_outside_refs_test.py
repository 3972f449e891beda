"""The repository documents itself: no pointers to documents or tracker items users lack.

Comments, docstrings, gin files and the README explain a choice in plain words or link to
the repository's own docs (docs/design.md, docs/objectives.md#<section>). A pointer to a
tracker item, to a numbered pitfall or section of an internal reference, or to an internal
design note means nothing to someone who cloned the repository, so this test lists every
one it finds (file:line) in the tracked files. It also checks that the two docs exist and
that every link to one of their sections names a heading that exists.

The example strings below carry a "~" that `_ex` removes before use, so that this file does
not itself contain the pointers it looks for (a plain grep of the repository stays empty).
"""
from __future__ import annotations

import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
THIS_FILE = pathlib.Path(__file__).resolve().relative_to(ROOT).as_posix()
DOCS = ("docs/design.md", "docs/objectives.md")

# Each alternative is one kind of pointer to something outside the repository.
OUTSIDE_REF = re.compile("|".join([
    r"(?i:\bissues? #?\d+)",                      # tracker items, numbered
    r"(?i:\bpitfall P\d+)",                       # numbered pitfalls of an internal note
    r"\(P\d{1,2}[a-z]?\b",                        # an opening "(" then P and a number
    r"\bP\d{1,2}[a-z]?\)",                        # P and a number, then ")"
    r"[,;] ?P\d{1,2}[a-z]?[,;:]",                # P and a number inside a list
    r"(?:^|#|\*|//|\"\"\")\s*P\d{1,2}:",          # a comment opening with P, a number, ":"
    r"(?i:\breference P\d+)",                     # a numbered item of an internal reference
    r"DESIGN\.md",                                # the internal design note
    r"shared[/]",                                 # the internal shared folder
    r"reference[/]objectives",                    # the internal objectives reference
    r"(?i:\breference (?:\N{SECTION SIGN}|section\b|\d+\.\d+|objectives\.md))",  # its sections
    r"\[secondary\]",                             # its provenance tags
    r"(?i:\bopen item \d)",                       # its list of open items
]))

# A link into the docs: docs/objectives.md#span-corruption, or objectives.md#x within docs/.
DOC_LINK = re.compile(r"(?:\bdocs/)?\b(design|objectives)\.md#([A-Za-z0-9_-]+)")
SAME_DOC_LINK = re.compile(r"\]\(#([A-Za-z0-9_-]+)\)")


def _ex(text: str) -> str:
  """An example string with its "~" markers removed (see the module docstring)."""
  return text.replace("~", "")


def find_outside_refs(text: str) -> list[tuple[int, str]]:
  """(line number, line) of every line of `text` that points outside the repository."""
  return [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1)
          if OUTSIDE_REF.search(line)]


def github_anchor(heading: str) -> str:
  """The anchor GitHub gives a Markdown heading: "T5 i.i.d. denoising" -> "t5-iid-denoising"."""
  text = re.sub(r"[`*]", "", heading.strip()).lower()
  text = re.sub(r"[^\w\- ]", "", text)
  return text.replace(" ", "-")


def doc_anchors(text: str) -> set[str]:
  """Anchors of every heading of a Markdown text (fenced code blocks skipped)."""
  anchors, fenced = set(), False
  for line in text.splitlines():
    if line.startswith("```"):
      fenced = not fenced
    elif not fenced and re.match(r"#{1,6} ", line):
      anchors.add(github_anchor(line.lstrip("#")))
  return anchors


def _tracked_files() -> list[str]:
  try:
    inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT,
                            capture_output=True, text=True, check=False)
  except FileNotFoundError:
    pytest.skip("git is not installed")
  if inside.returncode != 0 or inside.stdout.strip() != "true":
    pytest.skip(f"{ROOT} is not a git checkout")
  out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
  return [p for p in out.stdout.decode("utf-8").split("\0") if p]


def _read_text(path: str) -> str | None:
  """The file's text, or None for binary files and files absent from the work tree."""
  try:
    data = (ROOT / path).read_bytes()
  except (FileNotFoundError, IsADirectoryError):
    return None
  if b"\0" in data:
    return None
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError:
    return None


# --------------------------------------------------------------------------- the matcher

@pytest.mark.parametrize("line", [
    "# Fast paths (iss~ue 7). Each gives the plain path's loss.",
    "WAIT_TARGET = 0.02  # Iss~ue 7's acceptance",
    "see iss~ues #12 and #13",
    "so the loss falls on exactly those positions (pitfall P~4)",
    "  # As T5's full_lm (P~10): EOS after every document",
    "denom = jnp.maximum(weight_sum, 1.0)  # per-token mean (P~9)",
    '"""BERT MLM (refer~ence ~\N{SECTION SIGN}1.4, P~1, P~4): exact n per chunk."""',
    "  # P~4: seqio's EncoderFeatureConverter weights inputs == mask_id only",
    'T5 Table 5 "MASS-style" (NOT real MASS, P~2; see mass.py)',
    "EOS (refer~ence P~10, EOS rule): the answer ends with EOS",
    "lays them out (DESIGN~.md). Objectives never look at the architecture",
    "`sha~red/reference~/objectives.md` (outside this repository)",
    "Tables 3, 6 and 8 as transcribed in reference~/objectives.md",
    "# Reference ~\N{SECTION SIGN}0.3: (inputs_length) x (noise_density, mean_noise_span_length)",
    "# T5 deshuffling (refer~ence sect~ion 1.5; T5 Table 4)",
    "# BERT masked LM (Devlin et al. 2019; reference 1.4): 15% selected",
    "Rates from the reference's [secondary] entries.",
    "abstract was readable (refer~ence open item 2), so",
])
def test_matcher_flags_outside_pointers(line):
  line = _ex(line)
  assert find_outside_refs(line) == [(1, line.strip())]


@pytest.mark.parametrize("line", [
    "# Fast paths, for speed and memory at scale (docs/objectives.md#loss-normalisation).",
    "fairseq's command (github.com/facebookresearch/fairseq/issues/1899)",
    "Wang et al. 2022 sec. 5, Table 8; Raffel et al. 2020 Section 3.1.4",
    "differences against the reference cell come with paired-bootstrap intervals",
    "Grid.reference = 'causal_decoder_full_lm'",
    "P = parameters of a BERT-base-size stack; P~1 + P~2 = P",
    "inputs `s`/`u` (one shared or one unique sentinel per span)",
    "from jax.sharding import PartitionSpec as P",
    "spec = P('data', None)",
])
def test_matcher_passes_plain_text(line):
  assert find_outside_refs(_ex(line)) == []


def test_matcher_reports_line_numbers():
  text = _ex("first line\nsecond (P~4) line\nthird\nsee DESIGN~.md\n")
  assert find_outside_refs(text) == [(2, _ex("second (P~4) line")), (4, _ex("see DESIGN~.md"))]


def test_github_anchor():
  assert github_anchor(" T5 i.i.d. denoising") == "t5-iid-denoising"
  assert github_anchor(" T5 BERT-style is not BERT") == "t5-bert-style-is-not-bert"
  assert github_anchor(" Wang et al. 2022") == "wang-et-al-2022"
  assert github_anchor(" `full_lm` and friends") == "full_lm-and-friends"


# --------------------------------------------------------------------------- the repository

def test_docs_exist():
  missing = [d for d in DOCS if not (ROOT / d).is_file()]
  assert not missing, f"missing user documentation: {', '.join(missing)}"


def test_no_pointers_outside_the_repository():
  found = []
  for path in _tracked_files():
    if path == THIS_FILE:
      continue
    text = _read_text(path)
    if text is None:
      continue
    found += [f"{path}:{n}: {line}" for n, line in find_outside_refs(text)]
  assert not found, (
      "pointers to documents or tracker items users do not have; say why in plain words or "
      "link docs/design.md or docs/objectives.md#<section> instead:\n" + "\n".join(found))


def test_links_into_the_docs_name_existing_sections():
  anchors = {}
  for doc in DOCS:
    text = _read_text(doc)
    if text is None:
      pytest.fail(f"missing user documentation: {doc}")
    anchors[pathlib.PurePosixPath(doc).stem] = doc_anchors(text)
  paths = set(_tracked_files()) | set(DOCS)
  broken = []
  for path in sorted(paths):
    if path == THIS_FILE:
      continue
    text = _read_text(path)
    if text is None:
      continue
    for n, line in enumerate(text.splitlines(), start=1):
      for doc, anchor in DOC_LINK.findall(line):
        if anchor not in anchors[doc]:
          broken.append(f"{path}:{n}: {doc}.md#{anchor}")
      if path in DOCS:
        own = pathlib.PurePosixPath(path).stem
        broken += [f"{path}:{n}: #{a}" for a in SAME_DOC_LINK.findall(line)
                   if a not in anchors[own]]
  assert not broken, "links to sections that do not exist:\n" + "\n".join(broken)
