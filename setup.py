"""Objectax: language-model pretraining objectives across architectures (JAX/Flax/SeqIO).

The design card fixes the top-level folders (objectives/, models/, data/, gin/, launch/);
they are installed as the sub-packages ``objectax.objectives``, ``objectax.models``, ... so
that nothing generic like ``data`` or ``models`` lands in site-packages. The gin files
travel as package data of ``objectax.gin``.
"""
import setuptools

_PACKAGES = ("objectives", "models", "data", "launch", "gin")
_LAUNCH_SUBPACKAGES = ("eval", "grid", "interop", "tools")
# Maintained scorers, as T5 uses them: Google's ROUGE, sacrebleu's BLEU, scikit-learn's F1
# and Matthews correlation (scipy, for Pearson and Spearman, comes with jax).
_EVAL = ["rouge-score>=0.1.2", "sacrebleu>=2.3", "scikit-learn>=1.3"]
# Leaving the codebase (launch/interop/): Hugging Face transformers reads the exported
# folders, safetensors writes their weights, torch runs them, lm-eval is the EleutherAI
# harness Wang et al. 2022 evaluated with; protobuf lets transformers convert SentencePiece.
# torch stops below 2.14: 2.13 is the release the interop tests run against, and where a CPU
# build of it is on disk pip takes that instead of a CUDA build several GB larger.
_HF = ["transformers>=4.46", "torch>=2.2,<2.14", "safetensors>=0.4", "lm-eval>=0.4.5", "accelerate>=0.26",
       "protobuf>=3.20"]

setuptools.setup(
    name="objectax",
    version="0.1.0",
    description="Compare LM pretraining objectives across architectures with JAX/Flax/SeqIO.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=[f"objectax.{p}" for p in _PACKAGES]
    + [f"objectax.launch.{s}" for s in _LAUNCH_SUBPACKAGES],
    package_dir={f"objectax.{p}": p for p in _PACKAGES},  # sub-packages follow their parent
    package_data={"objectax.gin": ["*.gin", "*/*.gin", "*/*/*.gin", "*/*/*.json"]},
    include_package_data=True,
    install_requires=[
        # Ranges are open upward where it is safe: GPU hosts often carry a newer jax.
        "jax>=0.4.35",
        "flax>=0.10",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        "seqio>=0.0.19",
        "tensorflow>=2.16",
        "tensorflow-text>=2.16",
        "tensorflow-datasets>=4.9.4",
        "sentencepiece>=0.2",
        "gin-config>=0.5",
        "numpy>=1.26",
        # TensorBoard event files without TensorFlow/TensorBoard (absent on GPU hosts).
        "tensorboardX>=2.6",
        # `objectax ablate`'s plots (Agg backend: PNG files, no display).
        "matplotlib>=3.7",
    ],
    extras_require={
        # Downstream metrics (data/text_metrics.py), imported only when a metric is computed.
        "eval": _EVAL,
        "hf": _HF,
        # The tests cover the optional paths too, so CI installs every extra.
        "test": ["pytest>=7", *_EVAL, *_HF],
    },
    entry_points={"console_scripts": ["objectax=objectax.launch.main:run"]},
)
