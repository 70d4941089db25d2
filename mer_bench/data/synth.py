"""The embedded synthetic dataset ``synth``: a deterministic generator of MMSA-format files.

The files follow docs/architecture.md (Data) exactly and are written with the real files'
serialisers (pickle for IID and cross-dataset, joblib for OOD), so that ``synth`` goes through
the same safe loader and schema checks as MOSI/MOSEI. Layout under the returned root::

    CMU-SYNTH/Processed/{aligned,unaligned}_50.pkl              pickle   IID
    OOD_SYNTH/{binary,seven}/SYNTH_{aligned,unaligned}_50.pkl   joblib   OOD re-partitions
    MSA_cross_datasets/{synth,synth_b}.pkl                      pickle   two domains, aligned

What the generator puts in each sample (all of it a pure function of the config):

- Latent sentiment ``s = w_t z_t + w_a z_a + w_v z_v + w_e e``: ``z_t, z_a, z_v`` standard
  normal with pairwise correlation ``shared_latent`` (a common sentiment factor), ``e``
  independent noise; ``s`` is scaled to unit variance. ``regression_labels`` =
  ``score_scale * s`` rounded to multiples of ``score_step`` (at least one step away from 0)
  and clipped to [-3, 3]; ``|s|`` below the ``neutral_share`` quantile gives exactly 0.0.
  ``classification_labels`` (0/1/2) and ``annotations`` are its sign.
- Text (``text_bert``): [CLS], content, [SEP], padding; lengths ``min_text_len`` plus a
  negative binomial count (mean ``mean_text_len``), capped at n. Content = 2-4 sentiment
  words, each positive with probability ``sigmoid(text_gain * z_t)``, strong rather than mild
  when ``|z_t + text_noise * noise| > 1``, and replaced by a neutral sentiment word with
  probability ``neutral_word_share``; 0-2 occurrences of a *bias word* (see below); the rest
  Zipf-distributed filler words, all at random positions. ``raw_text`` spells each content id as one upper-case pseudo-word.
  ``text`` = a fixed random embedding per token id plus a shared sentiment direction scaled by
  the word's polarity (zero at padding).
- Audio / vision: per-sample mean ``av_gain * z_m * u_m + channel offset + nuisance``, with
  ``u_m`` a fixed unit direction over a few (at most 6) channels, modulated by a slow sinusoidal envelope, plus AR(1) frame noise;
  per-channel scales differ. Unaligned files have per-sample lengths (``min_length_frac`` to 1
  of ``L_a``/``L_v``); aligned files average the same frames over the text positions (length =
  text length), as forced alignment does. Padding frames are exact zeros. A few audio entries
  are ``-inf`` (as in real MOSI).
- Bias words: a few frequent tokens split into positive- and negative-associated ones. In the
  pool a bias word appears in ``bias_presence`` of the samples and its polarity agrees with the
  label sign with probability ``iid_bias_agreement`` (a moderate shortcut). IID files are a
  random subset of the pool; OOD files re-partition the pool so that train/valid keep a strong
  agreement (``ood_train_agreement``) and test the reverse (``ood_test_agreement``): the
  word-label shortcut that CIDer's counterfactual branch targets (docs/cider.md). The binary and
  seven OOD files are two independent re-partitions.
- Shapes (:class:`SynthShape`): ``small`` is the default config; ``mosi`` and ``mosei`` set the
  real corpora's split sizes and per-sample shapes (text 50 × 768 features, unaligned audio
  375 × 5 / 500 × 74, vision 500 × 20 / 500 × 35, aligned 50) and nothing else, so the real
  models can be timed and sized on them. The whole pool is held in memory while writing
  (:func:`generation_bytes`: about 3 GB for ``mosi``, over 40 GB for ``mosei``).
- Cross-dataset: two separately drawn domains sharing audio/vision widths but with different
  text lengths; domain b has a label shift, rotated audio/vision signal directions, other
  channel offsets/scales and a partly different vocabulary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from statistics import NormalDist
from typing import Any

import joblib
import numpy as np
from scipy.signal import lfilter

from mer_bench.data.types import CLS_ID, PAD_ID, SEP_ID, SPECIAL_IDS
from mer_bench.errors import ConfigError, DataError

SYNTH_VERSION = "1"
"""Bump when the generator's output changes for an unchanged config (it keys the cache)."""

PICKLE_PROTOCOL = 4
"""Fixed so that the same config gives byte-identical files on every Python."""

BERT_VOCAB_SIZE = 30522
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "valid", "test")

IID_DIR = Path("CMU-SYNTH/Processed")
OOD_DIR = Path("OOD_SYNTH")
CROSS_DIR = Path("MSA_cross_datasets")

_LEVELS = 5
"""Sentiment word levels: strong/mild negative, neutral, mild/strong positive."""
_MAX_SENTIMENT_SLOTS = 4
_MAX_BIAS_SLOTS = 2
_BLOCK = 64
_ACTIVE_CHANNELS = 6
CROSS_SIZE_FIELDS = ("cross_n_train", "cross_n_valid", "cross_n_test")
_ANNOTATIONS = np.array(["Negative", "Neutral", "Positive"], dtype=object)


@dataclass(frozen=True)
class SynthConfig:
    """Everything the generator depends on; its hash (with ``version``) keys the cache.

    The defaults are the main job's data. Validation and test splits hold 384 samples each
    (cross-dataset too), so that the paired significance tests can separate models that differ
    by a few points; sequences are short (text 16 tokens, unaligned audio/vision 80/100 frames)
    so that the main job runs in minutes on a 2-core CPU. ``data synth --shape mosi|mosei`` gives
    the real corpora's shapes.
    """

    seed: int = 0
    n_train: int = 256
    n_valid: int = 384
    n_test: int = 384
    pool_factor: float = 2.0
    """The pool that IID and OOD files draw from holds ``pool_factor`` × (train+valid+test)."""

    # text
    text_len: int = 16
    min_text_len: int = 8
    """Shortest sequence, [CLS] and [SEP] included (room for every sentiment and bias slot)."""
    mean_text_len: float = 11.0
    text_feat_dim: int = 24
    vocab_low: int = 1000
    vocab_high: int = 30000
    n_sentiment_words: int = 6
    """Words per sentiment level (five levels)."""
    n_bias_words: int = 2
    """Bias words per polarity."""
    n_filler_words: int = 1500
    zipf_exponent: float = 1.1

    # audio / vision
    audio_dim: int = 5
    vision_dim: int = 20
    audio_len: int = 80
    vision_len: int = 100
    min_length_frac: float = 0.4
    """Unaligned lengths are uniform-ish in [min_length_frac, 1] × L, longer for longer text."""
    neg_inf_share: float = 0.03
    """Share of samples with one ``-inf`` audio entry."""

    # signal
    text_weight: float = 0.6
    audio_weight: float = 0.5
    vision_weight: float = 0.5
    noise_weight: float = 0.3
    shared_latent: float = 0.3
    """Correlation between the three modality components (a common sentiment factor)."""
    neutral_share: float = 0.11
    score_scale: float = 1.5
    score_step: float = 0.2
    text_gain: float = 2.5
    """Slope of the logistic that picks each sentiment word's polarity from the text component."""
    text_noise: float = 0.5
    """Noise on the text component when choosing strong vs mild sentiment words."""
    neutral_word_share: float = 0.15
    text_feat_sentiment: float = 1.5
    av_gain: float = 1.5
    av_nuisance: float = 0.4
    frame_noise: float = 1.0
    frame_ar: float = 0.8

    # bias words
    bias_presence: float = 0.6
    iid_bias_agreement: float = 0.7
    ood_train_agreement: float = 0.92
    ood_test_agreement: float = 0.15

    # cross-dataset domains
    cross_n_train: int = 192
    cross_n_valid: int = 384
    cross_n_test: int = 384
    cross_audio_dim: int = 25
    cross_vision_dim: int = 171
    cross_text_len: int = 16
    cross_b_text_len: int = 24
    cross_b_label_shift: float = 0.3
    cross_b_rotation_deg: float = 30.0
    cross_b_vocab_swap: float = 0.35

    version: str = SYNTH_VERSION

    def __post_init__(self) -> None:
        for name in ("n_train", "n_valid", "n_test", *CROSS_SIZE_FIELDS):
            _check(getattr(self, name) >= 2, f"{name} must be >= 2")
        _check(self.pool_factor >= 1.0, "pool_factor must be >= 1")
        slots = 2 + _MAX_SENTIMENT_SLOTS + _MAX_BIAS_SLOTS
        _check(
            slots
            <= self.min_text_len
            <= min(self.text_len, self.cross_text_len, self.cross_b_text_len),
            f"min_text_len must be in [{slots}, every text length]",
        )
        _check(self.mean_text_len >= self.min_text_len, "mean_text_len must be >= min_text_len")
        for name in (
            "text_feat_dim",
            "audio_dim",
            "vision_dim",
            "cross_audio_dim",
            "cross_vision_dim",
        ):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1")
        _check(0.0 < self.min_length_frac <= 1.0, "min_length_frac must be in (0, 1]")
        shortest = math.floor(self.min_length_frac * min(self.audio_len, self.vision_len))
        _check(
            shortest >= self.text_len,
            "min_length_frac × audio_len/vision_len must be >= text_len (aligned files average "
            "at least one frame per token)",
        )
        _check(
            0 < self.vocab_low
            and self.vocab_high <= BERT_VOCAB_SIZE
            and self.vocab_low > max(SPECIAL_IDS),
            f"vocabulary range must lie in ({max(SPECIAL_IDS)}, {BERT_VOCAB_SIZE}]",
        )
        needed = (
            2 * (_LEVELS * self.n_sentiment_words + self.n_filler_words) + 2 * self.n_bias_words
        )
        _check(
            self.vocab_high - self.vocab_low >= needed,
            f"vocabulary range holds {self.vocab_high - self.vocab_low} ids, {needed} needed",
        )
        for name in ("n_sentiment_words", "n_bias_words", "n_filler_words"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1")
        for name in (
            "neg_inf_share",
            "neutral_share",
            "neutral_word_share",
            "bias_presence",
            "iid_bias_agreement",
            "ood_train_agreement",
            "ood_test_agreement",
            "cross_b_vocab_swap",
        ):
            _check(0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1]")
        _check(self.neutral_share < 1.0, "neutral_share must be < 1")
        _check(0.0 <= self.frame_ar < 1.0, "frame_ar must be in [0, 1)")
        _check(0.0 <= self.shared_latent < 1.0, "shared_latent must be in [0, 1)")
        weights = (self.text_weight, self.audio_weight, self.vision_weight, self.noise_weight)
        _check(min(weights) >= 0.0 and sum(weights) > 0.0, "signal weights must be >= 0, not all 0")
        _check(
            self.score_step > 0 and self.score_scale > 0, "score_scale and score_step must be > 0"
        )

    @property
    def n_total(self) -> int:
        return self.n_train + self.n_valid + self.n_test

    @property
    def key(self) -> str:
        """Short hash of every field (version included): names the cache folder."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def small(cls, seed: int = 0, **overrides: Any) -> SynthConfig:
        """A fast, small config for tests: short unaligned sequences, few samples, thin features."""
        base: dict[str, Any] = dict(
            seed=seed,
            n_train=300,
            n_valid=60,
            n_test=200,
            text_len=24,
            mean_text_len=14.0,
            text_feat_dim=8,
            audio_len=60,
            vision_len=80,
            cross_n_train=120,
            cross_n_valid=40,
            cross_n_test=80,
            cross_audio_dim=6,
            cross_vision_dim=9,
            cross_text_len=20,
            cross_b_text_len=30,
        )
        base.update(overrides)
        return cls(**base)


class SynthShape(str, Enum):
    """Tensor shapes and split sizes of the generated files (``data synth --shape``).

    ``small`` is :class:`SynthConfig`'s defaults (the main job's data); ``mosi`` and ``mosei``
    reproduce the real corpora's per-sample shapes and split sizes, so that a run on them
    exercises the real code path's memory and time without the real data.
    """

    SMALL = "small"
    MOSI = "mosi"
    MOSEI = "mosei"


_BERT_HIDDEN = 768
"""Width of the real files' precomputed text features (bert-base hidden states)."""

SHAPE_FIELDS: dict[SynthShape, dict[str, Any]] = {
    SynthShape.SMALL: {},
    SynthShape.MOSI: dict(
        n_train=1284,
        n_valid=229,
        n_test=686,
        text_len=50,
        text_feat_dim=_BERT_HIDDEN,
        audio_dim=5,
        vision_dim=20,
        audio_len=375,
        vision_len=500,
        # Cross-dataset files: MOSI-sized domains with the CASP feature widths (25 / 171);
        # domain a has MOSI's text length, domain b MOSEI's.
        cross_n_train=1284,
        cross_n_valid=229,
        cross_n_test=686,
        cross_audio_dim=25,
        cross_vision_dim=171,
        cross_text_len=44,
        cross_b_text_len=75,
    ),
    SynthShape.MOSEI: dict(
        n_train=16326,
        n_valid=1871,
        n_test=4659,
        text_len=50,
        text_feat_dim=_BERT_HIDDEN,
        audio_dim=74,
        vision_dim=35,
        audio_len=500,
        vision_len=500,
        cross_n_train=16326,
        cross_n_valid=1871,
        cross_n_test=4659,
        cross_audio_dim=25,
        cross_vision_dim=171,
        cross_text_len=75,
        cross_b_text_len=44,
    ),
}
"""The fields each shape sets; everything else (signal, vocabulary, shift) keeps its default."""


def shape_config(shape: SynthShape, seed: int = 0, **overrides: Any) -> SynthConfig:
    """The generator config of ``shape``, with ``overrides`` (e.g. smaller splits) on top."""
    return SynthConfig(**{**SHAPE_FIELDS[shape], "seed": seed, **overrides})


def generation_bytes(config: SynthConfig) -> int:
    """Rough peak memory of :func:`write_synth` for ``config`` (within about 20%).

    All float32: the sample pool, both cross-dataset domains (drawn up front), and two copies of
    the largest file while it is written (its split arrays and their pickled bytes); plus the
    embedding table (float64 while built).
    """
    n_pool = math.ceil(config.pool_factor * config.n_total)
    per_sample = (
        config.text_len * config.text_feat_dim
        + config.audio_len * config.audio_dim
        + config.vision_len * config.vision_dim
        + config.text_len * (config.audio_dim + config.vision_dim)
    )
    cross_width = config.text_feat_dim + config.cross_audio_dim + config.cross_vision_dim
    n_cross = sum(getattr(config, name) for name in CROSS_SIZE_FIELDS)
    cross = n_cross * (config.cross_text_len + config.cross_b_text_len) * cross_width
    floats = per_sample * (n_pool + 2 * config.n_total) + cross
    return int(4 * floats + 12 * BERT_VOCAB_SIZE * config.text_feat_dim)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(f"invalid SynthConfig: {message}")


# ----------------------------------------------------------------------------- internals


def _rng(config: SynthConfig, *stream: int) -> np.random.Generator:
    """An independent generator per purpose, so changing one part never shifts another's draws."""
    return np.random.default_rng(np.random.SeedSequence([config.seed, *stream]))


# Stream ids (only ever append: reusing a number changes every file).
_S_VOCAB, _S_EMBED, _S_POOL, _S_IID, _S_OOD_BINARY, _S_OOD_SEVEN = 1, 2, 3, 4, 5, 6
_S_CROSS_A, _S_CROSS_B, _S_AV_A, _S_AV_B, _S_AV_IID = 7, 8, 9, 10, 11


@dataclass(frozen=True)
class _Vocab:
    sentiment: np.ndarray
    """(5, n_sentiment_words) ids, rows = levels strong-neg … strong-pos."""
    bias: np.ndarray
    """(2, n_bias_words) ids: row 0 negative-associated, row 1 positive-associated."""
    filler: np.ndarray
    """(n_filler_words,) ids in Zipf rank order."""
    filler_p: np.ndarray
    reserve: np.ndarray
    """Unused ids, for the second domain's replacement words."""


@dataclass(frozen=True)
class _AVParams:
    direction: np.ndarray
    """(d,) unit vector carrying the modality's latent component."""
    offset: np.ndarray
    scale: np.ndarray


@dataclass(frozen=True)
class _Domain:
    name: str
    text_len: int
    mean_text_len: float
    vocab: _Vocab
    audio: _AVParams
    vision: _AVParams
    label_shift: float


@dataclass
class _Samples:
    """One drawn population (a pool or a cross-dataset domain), rows = samples."""

    ids: np.ndarray
    """(N, n) int64 token ids."""
    lengths: np.ndarray
    raw_text: np.ndarray
    video_ids: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    bias_state: np.ndarray
    """(N,) int8: 1 = a bias word agreeing with the label sign, -1 = contradicting, 0 = other."""
    text_feats: np.ndarray | None = None
    audio: np.ndarray | None = None
    vision: np.ndarray | None = None
    audio_lengths: np.ndarray | None = None
    vision_lengths: np.ndarray | None = None
    audio_aligned: np.ndarray | None = None
    vision_aligned: np.ndarray | None = None


def _zipf(n: int, exponent: float) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return p / p.sum()


def _build_vocab(config: SynthConfig) -> _Vocab:
    rng = _rng(config, _S_VOCAB)
    ids = rng.permutation(np.arange(config.vocab_low, config.vocab_high, dtype=np.int64))
    n_sent = _LEVELS * config.n_sentiment_words
    n_bias = 2 * config.n_bias_words
    sentiment = ids[:n_sent].reshape(_LEVELS, config.n_sentiment_words)
    bias = ids[n_sent : n_sent + n_bias].reshape(2, config.n_bias_words)
    start = n_sent + n_bias
    filler = ids[start : start + config.n_filler_words]
    reserve = ids[start + config.n_filler_words :]
    return _Vocab(sentiment, bias, filler, _zipf(len(filler), config.zipf_exponent), reserve)


def _shift_vocab(vocab: _Vocab, swap: float, rng: np.random.Generator) -> _Vocab:
    """The second domain: a share of sentiment and filler words replaced, filler ranks reshuffled."""
    sentiment = vocab.sentiment.copy()
    swap_s = rng.random(sentiment.shape) < swap
    n_s = int(swap_s.sum())
    sentiment[swap_s] = vocab.reserve[:n_s]
    filler = vocab.filler.copy()
    swap_f = rng.random(filler.shape) < swap
    filler[swap_f] = vocab.reserve[n_s : n_s + int(swap_f.sum())]
    # Partial rank shuffle: frequent words stay frequent-ish but their order changes.
    noisy_rank = np.arange(len(filler)) * np.exp(rng.normal(0.0, 0.7, len(filler)))
    filler = filler[np.argsort(noisy_rank, kind="stable")]
    return _Vocab(sentiment, vocab.bias, filler, vocab.filler_p, vocab.reserve[:0])


def _embedding_table(config: SynthConfig, vocab: _Vocab, other: _Vocab) -> np.ndarray:
    """(vocab, D_t) float32: one fixed vector per token id, sentiment words share a direction."""
    rng = _rng(config, _S_EMBED)
    dim = config.text_feat_dim
    table = rng.standard_normal((BERT_VOCAB_SIZE, dim)) / math.sqrt(dim)
    direction = rng.standard_normal(dim)
    direction /= np.linalg.norm(direction)
    # Polarity of each sentiment word in [-1, 1]; words shared by both domains keep one level.
    polarity = np.zeros(BERT_VOCAB_SIZE)
    levels = (np.arange(_LEVELS) - (_LEVELS - 1) / 2) / ((_LEVELS - 1) / 2)
    for v in (vocab, other):
        polarity[v.sentiment] = np.broadcast_to(levels[:, None], v.sentiment.shape)
    table += config.text_feat_sentiment * polarity[:, None] * direction[None, :]
    table[PAD_ID] = 0.0
    return table.astype(np.float32)


def _av_params(rng: np.random.Generator, dim: int) -> _AVParams:
    # Like facial action units, only a few channels carry the affect; the rest is nuisance.
    direction = rng.standard_normal(dim) * (rng.permutation(dim) < _ACTIVE_CHANNELS)
    direction /= np.linalg.norm(direction)
    return _AVParams(direction, rng.normal(0.0, 0.5, dim), np.exp(rng.normal(0.0, 0.3, dim)))


def _rotate(params: _AVParams, degrees: float, rng: np.random.Generator) -> _AVParams:
    """Same channels, signal direction turned by ``degrees``, new offsets and scales."""
    other = rng.standard_normal(params.direction.shape)
    other -= (other @ params.direction) * params.direction
    norm = np.linalg.norm(other)
    if norm == 0.0:  # one-channel modality: nothing to rotate towards
        direction = params.direction
    else:
        angle = math.radians(degrees)
        direction = math.cos(angle) * params.direction + math.sin(angle) * other / norm
    dim = params.direction.shape[0]
    return _AVParams(
        direction,
        params.offset + rng.normal(0.0, 0.1, dim),
        params.scale * np.exp(rng.normal(0.0, 0.1, dim)),
    )


_CONSONANTS = "BDFGKLMNPRSTVZ"
_VOWELS = "AEIOU"
_SYLLABLES = [c + v for c in _CONSONANTS for v in _VOWELS]


def _word_table() -> np.ndarray:
    """A distinct upper-case pseudo-word for every token id (raw_text renders the ids)."""
    base = len(_SYLLABLES)
    ids = np.arange(BERT_VOCAB_SIZE)
    digits = [ids // base**2 % base, ids // base % base, ids % base]
    syl = np.array(_SYLLABLES, dtype=object)
    return syl[digits[0]] + syl[digits[1]] + syl[digits[2]]


def _latents(
    config: SynthConfig, rng: np.random.Generator, n: int, shift: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latent components, regression scores (MOSI-like granularity) and sign classes."""
    w = np.array(
        [config.text_weight, config.audio_weight, config.vision_weight, config.noise_weight]
    )
    w = w / np.linalg.norm(w)
    comps = rng.standard_normal((n, 4))
    c = config.shared_latent
    comps[:, :3] = math.sqrt(c) * comps[:, 3:4] + math.sqrt(1 - c) * comps[:, :3]
    comps[:, 3] = rng.standard_normal(n)
    s = comps @ w
    s = s / math.sqrt(w @ w + c * (w[:3].sum() ** 2 - w[:3] @ w[:3])) + shift
    half_width = NormalDist().inv_cdf(0.5 + config.neutral_share / 2)
    magnitude = np.round(np.abs(s) * config.score_scale / config.score_step) * config.score_step
    magnitude = np.clip(np.maximum(magnitude, config.score_step), 0.0, 3.0)
    scores = np.where(np.abs(s) < half_width, 0.0, np.sign(s) * magnitude).astype(np.float32)
    classes = (np.sign(scores) + 1).astype(np.int64)
    return comps[:, :3], scores, classes


def _draw_text(
    config: SynthConfig,
    rng: np.random.Generator,
    domain: _Domain,
    z_text: np.ndarray,
    classes: np.ndarray,
    words: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Token ids (N, n), lengths, raw text and bias state of each sample."""
    n_samples, n = len(z_text), domain.text_len
    vocab = domain.vocab
    # Over-dispersed counts (negative binomial, shape 2): short and long utterances both occur.
    span = max(domain.mean_text_len - config.min_text_len, 1e-6)
    extra = rng.negative_binomial(2, 2.0 / (2.0 + span), n_samples)
    lengths = np.minimum(config.min_text_len + extra, n)
    content_max = n - 2
    content = rng.choice(vocab.filler, size=(n_samples, content_max), p=vocab.filler_p)

    # Sentiment slots: a noisy, graded reading of the text component. Each slot's polarity is
    # positive with probability sigmoid(text_gain * z_t); it is strong when a noisy |z_t|
    # exceeds 1; some slots carry a neutral (uninformative) sentiment word instead.
    shape = (n_samples, _MAX_SENTIMENT_SLOTS)
    n_sent = rng.integers(2, _MAX_SENTIMENT_SLOTS + 1, n_samples)
    positive = rng.random(shape) < 1.0 / (1.0 + np.exp(-config.text_gain * z_text[:, None]))
    strong = np.abs(z_text[:, None] + config.text_noise * rng.standard_normal(shape)) > 1.0
    level = np.where(positive, 3 + strong, 1 - strong)
    level = np.where(rng.random(shape) < config.neutral_word_share, 2, level)
    pick = rng.integers(0, config.n_sentiment_words, (n_samples, _MAX_SENTIMENT_SLOTS))
    sent_ids = vocab.sentiment[level, pick]
    sent_valid = np.arange(_MAX_SENTIMENT_SLOTS)[None, :] < n_sent[:, None]

    # Bias slots: polarity agrees with the label sign with probability iid_bias_agreement.
    has_bias = rng.random(n_samples) < config.bias_presence
    n_bias = np.where(has_bias, rng.integers(1, _MAX_BIAS_SLOTS + 1, n_samples), 0)
    label_sign = classes - 1
    agrees = rng.random(n_samples) < config.iid_bias_agreement
    random_sign = rng.integers(0, 2, n_samples) * 2 - 1
    polarity = np.where(label_sign == 0, random_sign, np.where(agrees, label_sign, -label_sign))
    bias_word = vocab.bias[
        (polarity > 0).astype(np.int64), rng.integers(0, config.n_bias_words, n_samples)
    ]
    bias_ids = np.repeat(bias_word[:, None], _MAX_BIAS_SLOTS, axis=1)
    bias_valid = np.arange(_MAX_BIAS_SLOTS)[None, :] < n_bias[:, None]
    bias_state = np.where(
        has_bias & (label_sign != 0), np.where(polarity == label_sign, 1, -1), 0
    ).astype(np.int8)

    # Put the slot words at distinct random positions inside each sample's content.
    slot_ids = np.concatenate([sent_ids, bias_ids], axis=1)
    slot_valid = np.concatenate([sent_valid, bias_valid], axis=1)
    keys = rng.random((n_samples, content_max))
    keys[np.arange(content_max)[None, :] >= (lengths - 2)[:, None]] = 2.0
    where = np.argsort(keys, axis=1, kind="stable")[:, : slot_ids.shape[1]]
    current = np.take_along_axis(content, where, axis=1)
    np.put_along_axis(content, where, np.where(slot_valid, slot_ids, current), axis=1)

    pos = np.arange(n)[None, :]
    ids = np.zeros((n_samples, n), dtype=np.int64)
    ids[:, 1:] = np.pad(content, ((0, 0), (0, 1)))
    ids[pos >= lengths[:, None] - 1] = PAD_ID
    ids[:, 0] = CLS_ID
    ids[np.arange(n_samples), lengths - 1] = SEP_ID
    raw_text = np.array(
        [" ".join(words[row[1 : length - 1]]) for row, length in zip(ids, lengths)], dtype=object
    )
    return ids, lengths.astype(np.int64), raw_text, bias_state


def _video_ids(rng: np.random.Generator, n: int, prefix: str) -> np.ndarray:
    """``<video>$_$<clip>`` ids: videos of 1-12 consecutive clips with random 11-char names."""
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))
    clips = rng.integers(1, 13, n)
    video_of = np.repeat(np.arange(n), clips)[:n]
    clip_no = np.arange(n) - np.searchsorted(video_of, video_of) + 1
    names = ["".join(chars) for chars in alphabet[rng.integers(0, len(alphabet), (n, 11))]]
    return np.array([f"{prefix}{names[v]}$_${c}" for v, c in zip(video_of, clip_no)], dtype=object)


def _frames(
    rng: np.random.Generator,
    z: np.ndarray,
    lengths: np.ndarray,
    max_len: int,
    params: _AVParams,
    config: SynthConfig,
) -> np.ndarray:
    """(N, L, d) float32 frames carrying ``z`` in their mean; exact zeros past each length."""
    n, dim = len(z), params.direction.shape[0]
    mean = (
        config.av_gain * z[:, None] * params.direction[None, :]
        + params.offset[None, :]
        + config.av_nuisance * rng.standard_normal((n, dim))
    ).astype(np.float32)
    t = np.arange(max_len)[None, :]
    period = rng.uniform(20.0, 80.0, (n, 1))
    phase = rng.uniform(0.0, 2 * math.pi, (n, 1))
    envelope = (1.0 + 0.5 * np.sin(2 * math.pi * t / period + phase)).astype(np.float32)
    rho = config.frame_ar
    b = np.array([math.sqrt(1 - rho**2)], dtype=np.float32)
    a = np.array([1.0, -rho], dtype=np.float32)
    scale = params.scale.astype(np.float32)
    out = np.empty((n, max_len, dim), dtype=np.float32)
    # Small blocks keep the temporaries in cache (time-axis operations are strided).
    for lo in range(0, n, _BLOCK):
        hi = min(lo + _BLOCK, n)
        innovations = rng.standard_normal((hi - lo, max_len, dim), dtype=np.float32)
        block = lfilter(b, a, innovations, axis=1)
        block *= np.float32(config.frame_noise)
        block += envelope[lo:hi, :, None] * mean[lo:hi, None, :]
        block *= scale
        out[lo:hi] = block
    out[t[0][None, :] >= lengths[:, None]] = 0.0
    return out


def _align(frames: np.ndarray, lengths: np.ndarray, text_lengths: np.ndarray, n: int) -> np.ndarray:
    """Average each sample's valid frames over its text positions, like forced alignment does."""
    n_samples, max_len, dim = frames.shape
    bounds = _token_bounds(lengths, text_lengths, n)
    count = np.maximum(bounds[:, 1:] - bounds[:, :-1], 1)[:, :, None]
    out = np.empty((n_samples, n, dim), dtype=np.float32)
    csum = np.zeros((_BLOCK, max_len + 1, dim))
    for lo in range(0, n_samples, _BLOCK):
        hi = min(lo + _BLOCK, n_samples)
        c = csum[: hi - lo]
        np.cumsum(frames[lo:hi], axis=1, out=c[:, 1:])
        upper = np.take_along_axis(c, bounds[lo:hi, 1:, None], axis=1)
        lower = np.take_along_axis(c, bounds[lo:hi, :-1, None], axis=1)
        out[lo:hi] = (upper - lower) / count[lo:hi]
    out[np.arange(n)[None, :] >= text_lengths[:, None]] = 0.0
    return out


def _token_bounds(lengths: np.ndarray, text_lengths: np.ndarray, n: int) -> np.ndarray:
    """(N, n+1) frame index where each text position's span starts (clipped past the text)."""
    t = np.minimum(np.arange(n + 1)[None, :], text_lengths[:, None])
    return (t * lengths[:, None]) // text_lengths[:, None]


def _unaligned_lengths(
    rng: np.random.Generator, text_lengths: np.ndarray, max_len: int, config: SynthConfig, n: int
) -> np.ndarray:
    """Longer utterances get longer recordings, with spread; in [min_frac, 1] × max_len."""
    rel = (text_lengths - config.min_text_len) / max(n - config.min_text_len, 1)
    spread = np.sqrt(0.5 * rel + 0.5 * rng.random(len(text_lengths)))
    frac = config.min_length_frac + (1 - config.min_length_frac) * spread
    return np.clip(np.floor(frac * max_len), config.text_len, max_len).astype(np.int64)


def _neg_inf_sites(
    rng: np.random.Generator, lengths: np.ndarray, dim: int, share: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = np.flatnonzero(rng.random(len(lengths)) < share)
    frames = np.floor(rng.random(len(rows)) * lengths[rows]).astype(np.int64)
    return rows, frames, rng.integers(0, dim, len(rows))


def _draw_population(
    config: SynthConfig,
    domain: _Domain,
    n_samples: int,
    rng: np.random.Generator,
    av_rng: np.random.Generator,
    words: np.ndarray,
    table: np.ndarray,
    unaligned: tuple[int, int] | None,
    id_prefix: str,
) -> _Samples:
    """Draw labels, text and features of ``n_samples`` samples of one domain."""
    z, scores, classes = _latents(config, rng, n_samples, domain.label_shift)
    ids, lengths, raw_text, bias_state = _draw_text(config, rng, domain, z[:, 0], classes, words)
    samples = _Samples(
        ids=ids,
        lengths=lengths,
        raw_text=raw_text,
        video_ids=_video_ids(rng, n_samples, id_prefix),
        scores=scores,
        classes=classes,
        bias_state=bias_state,
        text_feats=table[ids],
    )
    if unaligned is None:
        samples.audio = _frames(av_rng, z[:, 1], lengths, domain.text_len, domain.audio, config)
        samples.vision = _frames(av_rng, z[:, 2], lengths, domain.text_len, domain.vision, config)
        rows, frames, chans = _neg_inf_sites(
            av_rng, lengths, domain.audio.direction.shape[0], config.neg_inf_share
        )
        samples.audio[rows, frames, chans] = -np.inf
        return samples

    l_a, l_v = unaligned
    n = domain.text_len
    a_len = _unaligned_lengths(av_rng, lengths, l_a, config, n)
    v_len = _unaligned_lengths(av_rng, lengths, l_v, config, n)
    audio = _frames(av_rng, z[:, 1], a_len, l_a, domain.audio, config)
    vision = _frames(av_rng, z[:, 2], v_len, l_v, domain.vision, config)
    samples.audio_aligned = _align(audio, a_len, lengths, n)
    samples.vision_aligned = _align(vision, v_len, lengths, n)
    rows, frames, chans = _neg_inf_sites(
        av_rng, a_len, domain.audio.direction.shape[0], config.neg_inf_share
    )
    audio[rows, frames, chans] = -np.inf
    # The same recording glitch shows up at the text position whose span holds that frame.
    bounds = _token_bounds(a_len[rows], lengths[rows], n)[:, :n]
    token = (bounds <= frames[:, None]).sum(axis=1) - 1
    token = np.minimum(token, lengths[rows] - 1)
    samples.audio_aligned[rows, token, chans] = -np.inf
    samples.audio, samples.vision = audio, vision
    samples.audio_lengths, samples.vision_lengths = a_len, v_len
    return samples


def bias_words(config: SynthConfig = SynthConfig()) -> dict[str, tuple[int, ...]]:
    """The spurious bias-word token ids: ``{"negative": (...), "positive": (...)}``.

    ``positive`` words co-occur with positive labels in the pool (and far more so in OOD train,
    far less in OOD test); both cross-dataset domains use the same ids.
    """
    vocab = _build_vocab(config)
    return {
        "negative": tuple(int(i) for i in vocab.bias[0]),
        "positive": tuple(int(i) for i in vocab.bias[1]),
    }


# ----------------------------------------------------------------------------- partitions


def _random_partition(
    rng: np.random.Generator, n_pool: int, sizes: tuple[int, int, int]
) -> dict[str, np.ndarray]:
    order = rng.permutation(n_pool)[: sum(sizes)]
    cuts = np.cumsum(sizes)
    return dict(zip(SPLITS, (order[: cuts[0]], order[cuts[0] : cuts[1]], order[cuts[1] :])))


def _ood_partition(
    rng: np.random.Generator, bias_state: np.ndarray, config: SynthConfig
) -> dict[str, np.ndarray]:
    """Re-partition the pool: train/valid keep the bias words' label agreement, test reverses it.

    Exact quotas per category (agreeing / contradicting bias word / other) keep the share of
    bias-bearing samples equal to the pool's and set their agreement rate per side.
    """
    groups = {s: rng.permutation(np.flatnonzero(bias_state == s)) for s in (1, -1, 0)}
    bearing = (len(groups[1]) + len(groups[-1])) / len(bias_state)
    taken = {s: 0 for s in groups}
    picked: list[np.ndarray] = []
    for size, agreement in (
        (config.n_train + config.n_valid, config.ood_train_agreement),
        (config.n_test, config.ood_test_agreement),
    ):
        n_bearing = round(size * bearing)
        n_agree = round(n_bearing * agreement)
        quota = {1: n_agree, -1: n_bearing - n_agree, 0: size - n_bearing}
        part = []
        for state, count in quota.items():
            chosen = groups[state][taken[state] : taken[state] + count]
            if len(chosen) < count:
                raise ConfigError(
                    "invalid SynthConfig: the pool is too small for the OOD re-partition; "
                    "raise pool_factor or lower the agreement extremes"
                )
            taken[state] += count
            part.append(chosen)
        picked.append(rng.permutation(np.concatenate(part)))
    train_valid, test = picked
    return {
        "train": train_valid[: config.n_train],
        "valid": train_valid[config.n_train :],
        "test": test,
    }


# ----------------------------------------------------------------------------- files


@dataclass(frozen=True)
class _Dtypes:
    text_bert: type
    classification: type


_IID_DTYPES = _Dtypes(np.float32, np.float32)
_OOD_DTYPES = _Dtypes(np.int64, np.float64)


def _split_dict(
    samples: _Samples, idx: np.ndarray, *, aligned: bool, dtypes: _Dtypes
) -> dict[str, np.ndarray]:
    mask = (np.arange(samples.ids.shape[1])[None, :] < samples.lengths[idx, None]).astype(np.int64)
    text_bert = np.stack([samples.ids[idx], mask, np.zeros_like(mask)], axis=1)
    has_unaligned = samples.audio_aligned is not None
    if aligned and has_unaligned:
        audio, vision = samples.audio_aligned[idx], samples.vision_aligned[idx]
    else:
        audio, vision = samples.audio[idx], samples.vision[idx]
    out: dict[str, np.ndarray] = {
        "raw_text": samples.raw_text[idx],
        "id": samples.video_ids[idx],
        "text": samples.text_feats[idx],
        "text_bert": text_bert.astype(dtypes.text_bert),
        "audio": audio,
        "vision": vision,
    }
    if not aligned:
        out["audio_lengths"] = samples.audio_lengths[idx]
        out["vision_lengths"] = samples.vision_lengths[idx]
    classes = samples.classes[idx]
    out["annotations"] = _ANNOTATIONS[classes]
    out["classification_labels"] = classes.astype(dtypes.classification)
    out["regression_labels"] = samples.scores[idx].astype(np.float32)
    return out


def _file(
    samples: _Samples, parts: dict[str, np.ndarray], *, aligned: bool, dtypes: _Dtypes
) -> dict[str, dict[str, np.ndarray]]:
    return {
        split: _split_dict(samples, parts[split], aligned=aligned, dtypes=dtypes)
        for split in SPLITS
    }


def _dump_pickle(obj: object, path: Path) -> None:
    with path.open("wb") as fh:
        pickle.dump(obj, fh, protocol=PICKLE_PROTOCOL)


def _dump_joblib(obj: object, path: Path) -> None:
    joblib.dump(obj, path, protocol=PICKLE_PROTOCOL)


def write_synth(out_dir: Path, config: SynthConfig = SynthConfig()) -> list[Path]:
    """Generate the synthetic dataset and write it as MMSA files under ``out_dir``.

    Returns the written files in a fixed order (IID, OOD binary, OOD seven, cross). The same
    config always gives byte-identical files.
    """
    out_dir = Path(out_dir)
    vocab = _build_vocab(config)
    vocab_b = _shift_vocab(vocab, config.cross_b_vocab_swap, _rng(config, _S_CROSS_B, 0))
    table = _embedding_table(config, vocab, vocab_b)
    words = _word_table()

    av_rng = _rng(config, _S_AV_IID)
    main = _Domain(
        name="synth",
        text_len=config.text_len,
        mean_text_len=config.mean_text_len,
        vocab=vocab,
        audio=_av_params(av_rng, config.audio_dim),
        vision=_av_params(av_rng, config.vision_dim),
        label_shift=0.0,
    )
    n_pool = math.ceil(config.pool_factor * config.n_total)
    pool = _draw_population(
        config,
        main,
        n_pool,
        _rng(config, _S_POOL),
        av_rng,
        words,
        table,
        (config.audio_len, config.vision_len),
        "",
    )
    sizes = (config.n_train, config.n_valid, config.n_test)
    jobs: list[tuple[Path, Callable[[object, Path], None], Callable[[], object]]] = []
    iid = _random_partition(_rng(config, _S_IID), n_pool, sizes)
    for aligned in (True, False):
        name = "aligned_50.pkl" if aligned else "unaligned_50.pkl"
        jobs.append(
            (
                IID_DIR / name,
                _dump_pickle,
                lambda a=aligned: _file(pool, iid, aligned=a, dtypes=_IID_DTYPES),
            )
        )
    for task, stream in (("binary", _S_OOD_BINARY), ("seven", _S_OOD_SEVEN)):
        parts = _ood_partition(_rng(config, stream), pool.bias_state, config)
        for aligned in (True, False):
            name = f"SYNTH_{'aligned' if aligned else 'unaligned'}_50.pkl"
            jobs.append(
                (
                    OOD_DIR / task / name,
                    _dump_joblib,
                    lambda a=aligned, p=parts: _file(pool, p, aligned=a, dtypes=_OOD_DTYPES),
                )
            )

    cross_sizes = (config.cross_n_train, config.cross_n_valid, config.cross_n_test)
    cross_av = _rng(config, _S_AV_A)
    domain_a = _Domain(
        name="synth",
        text_len=config.cross_text_len,
        mean_text_len=config.mean_text_len * config.cross_text_len / config.text_len,
        vocab=vocab,
        audio=_av_params(cross_av, config.cross_audio_dim),
        vision=_av_params(cross_av, config.cross_vision_dim),
        label_shift=0.0,
    )
    shift_rng = _rng(config, _S_AV_B)
    domain_b = _Domain(
        name="synth_b",
        text_len=config.cross_b_text_len,
        mean_text_len=config.mean_text_len * config.cross_b_text_len / config.text_len,
        vocab=vocab_b,
        audio=_rotate(domain_a.audio, config.cross_b_rotation_deg, shift_rng),
        vision=_rotate(domain_a.vision, config.cross_b_rotation_deg, shift_rng),
        label_shift=config.cross_b_label_shift,
    )
    for domain, stream, prefix in ((domain_a, _S_CROSS_A, "a"), (domain_b, _S_CROSS_B, "b")):
        rng = _rng(config, stream, 1)
        population = _draw_population(
            config, domain, sum(cross_sizes), rng, rng, words, table, None, f"{prefix}_"
        )
        parts = _random_partition(_rng(config, stream, 2), sum(cross_sizes), cross_sizes)
        jobs.append(
            (
                CROSS_DIR / f"{domain.name}.pkl",
                _dump_pickle,
                lambda s=population, p=parts: _file(s, p, aligned=True, dtypes=_IID_DTYPES),
            )
        )

    written = []
    for rel, dump, build in jobs:
        path = out_dir / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            dump(build(), path)
        except OSError as exc:
            raise DataError(f"cannot write synthetic data file {path}: {exc}") from None
        written.append(path)
    return written


# ----------------------------------------------------------------------------- cache


def default_cache_base() -> Path:
    """``$MER_BENCH_CACHE`` if set, else ``~/.cache/mer_bench``."""
    env = os.environ.get("MER_BENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mer_bench"


def ensure_synth(cache_dir: Path | None = None, config: SynthConfig = SynthConfig()) -> Path:
    """Return the root holding ``CMU-SYNTH/…``, generating it under ``cache_dir`` if missing.

    The root is ``<cache_dir>/synth-<config.key>`` (``cache_dir`` defaults to
    :func:`default_cache_base`). Files are written into a private temporary folder that is
    renamed into place only when complete, so concurrent callers never see a partial dataset:
    the first rename wins and the others discard their copy.
    """
    base = Path(cache_dir) if cache_dir is not None else default_cache_base()
    root = base / f"synth-{config.key}"
    if (root / MANIFEST_NAME).is_file():
        return root
    if root.exists():
        raise DataError(
            f"synthetic data cache {root} exists but has no {MANIFEST_NAME} (not written by "
            "this generator or damaged); delete it and retry"
        )
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".synth-{config.key}-", dir=base))
    except OSError as exc:
        raise DataError(f"cannot create the synthetic data cache under {base}: {exc}") from None
    try:
        files = write_synth(tmp, config)
        manifest = {
            "version": config.version,
            "key": config.key,
            "config": dataclasses.asdict(config),
            "files": {str(p.relative_to(tmp)): _sha256(p) for p in files},
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        try:
            tmp.rename(root)
        except OSError as exc:
            # Another process renamed its complete copy first; theirs is as good as ours.
            if not (root / MANIFEST_NAME).is_file():
                raise DataError(f"cannot move the synthetic data into {root}: {exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
