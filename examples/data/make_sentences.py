"""Writes the worked example's data: short sentences from a small grammar, one JSON record
per line, {"text": ...}, in sentences_train.jsonl and sentences_validation.jsonl (no
sentence is in both). Deterministic; run it again to recreate the files:

    python examples/data/make_sentences.py
"""
import json
import os
import random

SUBJECTS = ["the cat", "a dog", "my neighbour", "the old fisherman", "a small child", "the teacher",
            "our team", "the river", "a quiet student", "the baker", "every bird", "the wind"]
VERBS = ["sees", "follows", "paints", "remembers", "carries", "finds", "builds", "answers",
         "watches", "visits", "greets", "opens"]
OBJECTS = ["the red door", "a long letter", "the green hill", "an empty boat", "the last train",
           "a wooden box", "the morning market", "a bright lamp", "the stone bridge",
           "a warm coat", "the village square", "an open window"]
ENDINGS = ["", " today", " at night", " in the rain", " before dinner", " with care",
           " every morning", " near the sea"]


def sentences(seed: int = 0):
  rng = random.Random(seed)
  seen = set()
  while True:
    s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(ENDINGS)}"
    if s not in seen:
      seen.add(s)
      yield s


def main():
  here = os.path.dirname(os.path.abspath(__file__))
  made = sentences()
  for split, count in (("validation", 200), ("train", 3000)):
    with open(os.path.join(here, f"sentences_{split}.jsonl"), "w", encoding="utf-8") as f:
      for _ in range(count):
        f.write(json.dumps({"text": next(made)}) + "\n")


if __name__ == "__main__":
  main()
