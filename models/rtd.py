"""Replaced-token detection: ELECTRA on the encoder, SpacTor on the encoder-decoder.

ELECTRA (Clark et al. 2020; google-research/electra; docs/objectives.md#electra). A small generator
(an encoder of the same depth whose width, heads and MLP are `generator_fraction` of the
discriminator's: 1/4 for ELECTRA-small, 1/3 for base) reads the masked text through the
shared token embeddings and predicts the selected tokens (an MLM, loss at the selected
positions). Its samples replace the selected tokens; the discriminator (the encoder-only
model itself) labels every real token original or replaced. A sample equal to the
original counts as original. No gradient flows through the sampling. Loss =
generator_weight (1.0) * MLM + discriminator_weight (50.0) * RTD, each a per-token mean.
The masking is the data side: objectives/electra.py (85% [MASK], 15% kept, no random).

SpacTor (Ye et al. 2024, arXiv 2401.13160; docs/objectives.md#spactor; only the abstract
was read, so the settings are ours). The data are span
corruption's. For the first `tau` steps the loss is hybrid: inside the model,
`mask_rate` of the ordinary input tokens (no sentinel, EOS or padding) become [MASK], a
generator sharing the embeddings samples replacements for them, the encoder reads the
result, an RTD head on the encoder output labels each token, and the decoder
reconstructs the spans as usual. Loss = SC + mlm_weight * MLM + rtd_weight * RTD. From
step tau on, plain span corruption (no generator is run: `jax.lax.cond` executes one
branch). Only the abstract of the paper was readable here, so tau and the weights default
to values of our choosing (ELECTRA's weights; tau = 120k) and are gin settings.

Both models subclass the architecture's model: the discriminator's parameters keep the
encoder-only / encoder-decoder names, and the generator and RTD head add "generator" and
"rtd_head".
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from objectax.models import encdec
from objectax.models import encoder
from objectax.models import layers
from objectax.models import model_objectives as mo
from objectax.models.config import ModelConfig


def generator_config(config: ModelConfig, fraction: float) -> ModelConfig:
  """The generator's shape: width, heads and MLP scaled by `fraction`, same depth (ELECTRA)."""
  scale = lambda n: max(1, int(round(n * fraction)))
  return dataclasses.replace(config, d_model=scale(config.d_model),
                             num_heads=scale(config.num_heads), mlp_dim=scale(config.mlp_dim))


class Generator(nn.Module):
  """A narrower encoder between the shared embeddings: D -> D_g, its blocks, D_g -> D.

  Returns final-normed states of width D; logits come from the shared embedding table
  (ELECTRA ties the generator's input and output embeddings to the discriminator's).
  """

  config: ModelConfig  # the discriminator's
  fraction: float

  def setup(self):
    g_cfg = generator_config(self.config, self.fraction)
    d, d_g = self.config.d_model, g_cfg.d_model
    init = nn.initializers.lecun_normal()
    self.project_in_DG = layers._param(self, "project_in", init, (d, d_g), ("embed", "mlp"),  # pylint: disable=protected-access
                                       self.config)
    self.body = encoder.Model(g_cfg)  # its own embedding table is never touched or created
    self.project_out_GD = layers._param(self, "project_out", init, (d_g, d), ("mlp", "embed"),  # pylint: disable=protected-access
                                        self.config)
    self.out_norm = layers.RMSNorm(self.config)

  def __call__(self, x_BLD: jax.Array, batch: Mapping[str, jax.Array], *,
               deterministic: bool = True) -> jax.Array:
    dtype = jnp.dtype(self.config.dtype)
    x_BLG = jnp.einsum("BLD,DG->BLG", x_BLD, self.project_in_DG.astype(dtype))
    h_BLG = self.body.hidden_from_embeddings(x_BLG, batch, deterministic=deterministic)
    return self.out_norm(jnp.einsum("BLG,GD->BLD", h_BLG, self.project_out_GD.astype(dtype)))


class RtdHead(nn.Module):
  """Per-token logit of "replaced": dense D -> D, GELU, dense D -> 1 plus a bias (ELECTRA's
  discriminator head; the only bias in the model, it learns the prior of replacement)."""

  config: ModelConfig

  @nn.compact
  def __call__(self, h_BLD: jax.Array) -> jax.Array:
    cfg = self.config
    d = cfg.d_model
    init = nn.initializers.lecun_normal()
    dense_DE = layers._param(self, "dense", init, (d, d), ("embed", "mlp"), cfg)  # pylint: disable=protected-access
    # Zero: an untrained detector says "replaced with probability 1/2" everywhere.
    out_E = layers._param(self, "out", nn.initializers.zeros, (d,), ("mlp",), cfg)  # pylint: disable=protected-access
    bias = layers._param(self, "bias", nn.initializers.zeros, (), (), cfg)  # pylint: disable=protected-access
    h_BLE = jax.nn.gelu(jnp.einsum("BLD,DE->BLE", h_BLD.astype(jnp.float32),
                                   dense_DE.astype(jnp.float32)))
    return jnp.einsum("BLE,E->BL", h_BLE, out_E.astype(jnp.float32)) + bias.astype(jnp.float32)


def sample_tokens(logits_BLV: jax.Array, rng: jax.Array, regular_ids: tuple[int, int]) -> jax.Array:
  """One sample per position from softmax(logits) over the ordinary ids only (no PAD, EOS,
  UNK, sentinel or padding row can replace a token); no gradient flows through it."""
  low, high = regular_ids
  ids_V = jnp.arange(logits_BLV.shape[-1])
  allowed_V = (ids_V >= low) & (ids_V < high)
  logits_BLV = jnp.where(allowed_V, jax.lax.stop_gradient(logits_BLV), -jnp.inf)
  return jax.random.categorical(rng, logits_BLV, axis=-1).astype(jnp.int32)


def rtd_terms(logits_BL: jax.Array, replaced_BL: jax.Array,
              real_BL: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(mean binary cross-entropy, accuracy, count) over the real (non-padding) tokens."""
  real_BL = real_BL.astype(jnp.float32)
  count = jnp.maximum(jnp.sum(real_BL), 1.0)
  bce_BL = optax.sigmoid_binary_cross_entropy(logits_BL, replaced_BL.astype(jnp.float32))
  correct_BL = ((logits_BL > 0) == replaced_BL).astype(jnp.float32)
  return jnp.sum(bce_BL * real_BL) / count, jnp.sum(correct_BL * real_BL) / count, jnp.sum(real_BL)


class ElectraOutputs(NamedTuple):
  """generator logits_BLV; the discriminator's input (samples at the selected positions);
  replaced_BL (a sample differing from the original); the discriminator's RTD logits_BL."""
  gen_logits_BLV: jax.Array
  corrupted_BL: jax.Array
  replaced_BL: jax.Array
  rtd_logits_BL: jax.Array


class SpactorOutputs(NamedTuple):
  """The hybrid stage: decoder logits_BTV (span corruption of the corrupted inputs), the
  generator's logits_BSV, the positions it refilled, the encoder's input, the verdicts."""
  logits_BTV: jax.Array
  gen_logits_BSV: jax.Array
  selected_BS: jax.Array
  corrupted_BS: jax.Array
  replaced_BS: jax.Array
  rtd_logits_BS: jax.Array


class ElectraEncoder(encoder.Model):
  """The encoder-only model as ELECTRA's discriminator, with its generator and RTD head."""

  generator_fraction: float = 0.25
  regular_ids: tuple[int, int] = (3, 4)

  def setup(self):
    super().setup()
    self.generator = Generator(self.config, self.generator_fraction)
    self.rtd_head = RtdHead(self.config)

  def __call__(self, batch: Mapping[str, jax.Array], *, deterministic: bool = True) -> jax.Array:
    """RTD logits_BL of a corrupted batch; runs the generator too, so `init` creates it."""
    return self.forward(batch, jax.random.key(0), deterministic=deterministic).rtd_logits_BL

  def forward(self, batch: Mapping[str, jax.Array], rng: jax.Array, *,
              deterministic: bool = True) -> ElectraOutputs:
    """The generator's logits, its samples in place of the selected tokens, the verdicts."""
    inputs_BL, targets_BL = batch[encoder.INPUTS_KEY], batch[encoder.TARGETS_KEY]
    gen_logits_BLV = self.embed.attend(
        self.generator(self.embed(inputs_BL), batch, deterministic=deterministic))
    selected_BL = targets_BL > 0  # the data side's selected positions (masked or kept)
    sample_BL = sample_tokens(gen_logits_BLV, rng, self.regular_ids)
    corrupted_BL = jnp.where(selected_BL, sample_BL, inputs_BL)
    replaced_BL = selected_BL & (sample_BL != targets_BL)
    h_BLD = self.hidden_from_embeddings(self.embed(corrupted_BL), batch,
                                        deterministic=deterministic)
    return ElectraOutputs(gen_logits_BLV, corrupted_BL, replaced_BL, self.rtd_head(h_BLD))


class SpactorEncDec(encdec.Model):
  """The encoder-decoder with SpacTor's generator and an RTD head on the encoder output."""

  generator_fraction: float = 0.25
  mask_rate: float = 0.15
  regular_ids: tuple[int, int] = (3, 4)
  mask_id: int = 0

  def setup(self):
    super().setup()
    self.generator = Generator(self.config, self.generator_fraction)
    self.rtd_head = RtdHead(self.config)

  def __call__(self, batch: Mapping[str, jax.Array], *, deterministic: bool = True) -> jax.Array:
    """Plain span-corruption logits; at init the hybrid path runs so its parameters exist."""
    if self.is_initializing():
      return self.hybrid(batch, jax.random.key(0), deterministic=deterministic).logits_BTV
    return super().__call__(batch, deterministic=deterministic)

  def hybrid(self, batch: Mapping[str, jax.Array], rng: jax.Array, *,
             deterministic: bool = True) -> SpactorOutputs:
    """Masks `mask_rate` of the ordinary input tokens, refills them by sampling the
    generator, and runs the encoder (with its RTD head) and the decoder on the result."""
    tokens_BS = batch["encoder_input_tokens"]
    low, high = self.regular_ids
    select_rng, sample_rng = jax.random.split(rng)
    candidate_BS = ((tokens_BS >= low) & (tokens_BS < high)
                    & (encdec.encoder_segment_ids(batch) > 0))
    selected_BS = candidate_BS & (jax.random.uniform(select_rng, tokens_BS.shape) < self.mask_rate)
    masked_BS = jnp.where(selected_BS, self.mask_id, tokens_BS)
    gen_logits_BSV = self.embed.attend(
        self.generator(self.embed(masked_BS), batch, deterministic=deterministic))
    sample_BS = sample_tokens(gen_logits_BSV, sample_rng, self.regular_ids)
    corrupted_BS = jnp.where(selected_BS, sample_BS, tokens_BS)
    replaced_BS = selected_BS & (sample_BS != tokens_BS)
    encoded_BSD = self.encode_embeddings(self.embed(corrupted_BS), batch,
                                         deterministic=deterministic)
    logits_BTV = self.decode_embeddings(self.embed(batch["decoder_input_tokens"]), encoded_BSD,
                                        batch, deterministic=deterministic)
    return SpactorOutputs(logits_BTV, gen_logits_BSV, selected_BS, corrupted_BS, replaced_BS,
                          self.rtd_head(encoded_BSD))


def _rngs(rng: jax.Array, evaluate: bool) -> tuple[jax.Array, dict | None]:
  """(sampling key, dropout rngs): evaluation samples from a fixed key and drops nothing."""
  sample_rng, dropout_rng = jax.random.split(jax.random.key(0) if evaluate else rng)
  return sample_rng, None if evaluate else {"dropout": dropout_rng}


def make_electra(arch: Any, model_cfg: ModelConfig, cfg: Any, vocab: mo.Vocab) -> ElectraEncoder:
  del arch
  return ElectraEncoder(model_cfg, generator_fraction=cfg.generator_fraction,
                        regular_ids=vocab.regular_ids)


def electra_loss(cfg: Any) -> mo.LossFn:
  """generator_weight * MLM + discriminator_weight * RTD; "loss" is that total."""

  def loss(model, params, batch, *, rng, step, evaluate, z_loss):
    del step
    sample_rng, rngs = _rngs(rng, evaluate)
    out = model.apply({"params": params}, batch, sample_rng, deterministic=evaluate, rngs=rngs,
                      method=ElectraEncoder.forward)
    mlm, z, _ = mo.mean_cross_entropy(out.gen_logits_BLV, batch[encoder.TARGETS_KEY],
                                      batch[encoder.WEIGHTS_KEY], z_loss)
    real_BL = encoder.segment_ids(batch) > 0
    replaced_BL = out.replaced_BL
    rtd, accuracy, count = rtd_terms(out.rtd_logits_BL, replaced_BL, real_BL)
    total = cfg.generator_weight * mlm + cfg.discriminator_weight * rtd
    replaced = jnp.sum(replaced_BL & real_BL) / jnp.maximum(count, 1.0)
    return total + cfg.generator_weight * z, {
        "loss": total, "z_loss": z, "target_tokens": count, "mlm_loss": mlm, "rtd_loss": rtd,
        "rtd_accuracy": accuracy, "replaced_fraction": replaced}

  return loss


def make_spactor(arch: Any, model_cfg: ModelConfig, cfg: Any, vocab: mo.Vocab) -> SpactorEncDec:
  """[MASK] is the last sentinel, <extra_id_{E-1}>, which span corruption reaches only with
  E spans in one example (its sentinels count down from <extra_id_0>)."""
  del arch
  return SpactorEncDec(model_cfg, generator_fraction=cfg.generator_fraction,
                       mask_rate=cfg.mask_rate, regular_ids=vocab.regular_ids,
                       mask_id=vocab.size - vocab.extra_ids)


def spactor_loss(cfg: Any) -> mo.LossFn:
  """SC + mlm_weight * MLM + rtd_weight * RTD while step < tau, SC after; "loss" is SC."""
  zero = jnp.zeros((), jnp.float32)

  def loss(model, params, batch, *, rng, step, evaluate, z_loss):
    sample_rng, rngs = _rngs(rng, evaluate)
    targets_BT, weights_BT = batch[encdec.TARGETS_KEY], batch[encdec.WEIGHTS_KEY]

    def plain(_):
      logits_BTV = model.apply({"params": params}, batch, deterministic=evaluate, rngs=rngs)
      sc, z, weight = mo.mean_cross_entropy(logits_BTV, targets_BT, weights_BT, z_loss)
      return sc + z, {"loss": sc, "z_loss": z, "target_tokens": weight, "mlm_loss": zero,
                      "rtd_loss": zero, "rtd_accuracy": zero, "hybrid": zero}

    def hybrid(_):
      out = model.apply({"params": params}, batch, sample_rng, deterministic=evaluate,
                        rngs=rngs, method=SpactorEncDec.hybrid)
      sc, z, weight = mo.mean_cross_entropy(out.logits_BTV, targets_BT, weights_BT, z_loss)
      mlm, gen_z, _ = mo.mean_cross_entropy(out.gen_logits_BSV, batch["encoder_input_tokens"],
                                            out.selected_BS, z_loss)
      real_BS = encdec.encoder_segment_ids(batch) > 0
      rtd, accuracy, _ = rtd_terms(out.rtd_logits_BS, out.replaced_BS, real_BS)
      objective = sc + z + cfg.mlm_weight * (mlm + gen_z) + cfg.rtd_weight * rtd
      return objective, {"loss": sc, "z_loss": z, "target_tokens": weight, "mlm_loss": mlm,
                         "rtd_loss": rtd, "rtd_accuracy": accuracy,
                         "hybrid": jnp.ones((), jnp.float32)}

    if evaluate:  # SpacTor's model is judged as the span-corruption model it ends as
      return plain(None)
    return jax.lax.cond(step < cfg.tau, hybrid, plain, None)

  return loss


def _generator_and_head_flops(model_cfg: ModelConfig, fraction: float, length: int) -> float:
  """Per token the generator reads: its blocks, the two projections, the tied logits over
  the vocabulary, and the RTD head (D x D and D x 1)."""
  g_cfg = generator_config(model_cfg, fraction)
  d, d_g = model_cfg.d_model, g_cfg.d_model
  return (g_cfg.num_layers * mo.block_flops_per_token(g_cfg, length)
          + 6.0 * (2 * d * d_g + d * model_cfg.vocab_size + d * d + d))


def electra_flops(model_cfg: ModelConfig, cfg: Any, lengths: Mapping[str, int]) -> float:
  """The generator and RTD head; minus the encoder's LM head, which ELECTRA never runs."""
  return (_generator_and_head_flops(model_cfg, cfg.generator_fraction, lengths["encoder"])
          - 6.0 * model_cfg.d_model * model_cfg.vocab_size)


def spactor_flops(model_cfg: ModelConfig, cfg: Any, lengths: Mapping[str, int]) -> float:
  """The hybrid stage: generator and RTD head over the encoder tokens, per example token."""
  s, t = lengths["encoder"], lengths["decoder"]
  return _generator_and_head_flops(model_cfg, cfg.generator_fraction, s) * s / (s + t)


mo.MODEL_OBJECTIVES.add("electra", mo.ModelObjective("electra", make_electra, electra_loss,
                                                     electra_flops, wraps=("encoder_only",)))
mo.MODEL_OBJECTIVES.add("spactor", mo.ModelObjective("spactor", make_spactor, spactor_loss,
                                                     spactor_flops, wraps=("encoder_decoder",)))
