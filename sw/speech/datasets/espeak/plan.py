"""The corpus planner: speaker, sentence, prosody and noise of every utterance; the worker jobs.

:func:`plan_corpus` turns a configuration into the deterministic list of
:class:`UtteranceSpec` (voice families split between train, dev and test,
speakers drawn per split, sentences from
:mod:`deltarnn.speech.datasets.sentences`); :func:`plan_jobs` groups that list
into the fixed jobs of ``speakers_per_job`` speakers that fresh worker
processes render.  Nothing is synthesised here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deltarnn.speech.datasets.sentences import generate_sentence

from .config import SPLITS, EspeakConfig
from .voices import VARIANT_FAMILIES

__all__ = ["UtteranceSpec", "plan_corpus", "plan_jobs"]


@dataclass(frozen=True)
class UtteranceSpec:
    """Everything needed to render one utterance.

    Attributes
    ----------
    id, speaker, split : str
        Identifiers.
    text : str
        The sentence.
    accent, variant : str
        eSpeak voice ``accent+variant``.
    rate, pitch, pitch_range : int
        eSpeak parameters.
    seed : int
        Seed of eSpeak's noise and of the added noise.
    snr_db : float
        SNR of the added noise.
    noise : str
        ``"white"`` or ``"pink"``.
    level_dbfs : float
        Peak level.
    lead_s, tail_s : float
        Silence added before and after the speech, in seconds.
    """

    id: str
    speaker: str
    split: str
    text: str
    accent: str
    variant: str
    rate: int
    pitch: int
    pitch_range: int
    seed: int
    snr_db: float
    noise: str
    level_dbfs: float
    lead_s: float = 0.0
    tail_s: float = 0.0

    @property
    def voice(self) -> str:
        """eSpeak voice name."""
        return f"{self.accent}+{self.variant}"


def _split_variants(config: EspeakConfig, rng: np.random.Generator) -> dict[str, list[str]]:
    """Assign voice families (see :data:`VARIANT_FAMILIES`) to disjoint splits.

    ``n_test_variants`` and ``n_dev_variants`` count families (timbres); the
    gender ratio of the families is kept where the counts allow it.

    Parameters
    ----------
    config : EspeakConfig
        The configuration (variants and family counts).
    rng : numpy.random.Generator
        The planner's generator (advanced by the shuffles).

    Returns
    -------
    dict of str to list of str
        Sorted variant names of each split.

    Raises
    ------
    ValueError
        If there are too few families for dev, test and training.
    """
    families: dict[str, list[str]] = {}
    gender: dict[str, str] = {}
    for v, g in sorted(config.variants):
        fam = VARIANT_FAMILIES.get(v, v)
        families.setdefault(fam, []).append(v)
        gender.setdefault(fam, g)
    by_gender: dict[str, list[str]] = {}
    for fam in sorted(families):
        by_gender.setdefault(gender[fam], []).append(fam)
    total = len(families)
    if config.n_dev_variants + config.n_test_variants >= total:
        raise ValueError(
            f"only {total} voice families: too few for {config.n_dev_variants} dev and "
            f"{config.n_test_variants} test voices plus training"
        )
    pools = {g: [str(f) for f in rng.permutation(fs)] for g, fs in sorted(by_gender.items())}
    out: dict[str, list[str]] = {}
    for split, n in (("test", config.n_test_variants), ("dev", config.n_dev_variants)):
        chosen: list[str] = []
        minority = sorted(pools, key=lambda g: len(by_gender[g]))[:-1]
        for g in minority:
            share = round(n * len(by_gender[g]) / total)
            if n >= 2:
                share = max(share, 1)
            share = min(share, len(pools[g]))
            chosen += [pools[g].pop() for _ in range(share)]
        while len(chosen) < n:
            g = max(pools, key=lambda g: len(pools[g]))
            chosen.append(pools[g].pop())
        out[split] = sorted(v for fam in chosen for v in families[fam])
    out["train"] = sorted(v for fams in pools.values() for fam in fams for v in families[fam])
    return out


def plan_corpus(config: EspeakConfig) -> list[UtteranceSpec]:
    """Deterministic list of all utterances of a configuration.

    Parameters
    ----------
    config : EspeakConfig
        The configuration.

    Returns
    -------
    list of UtteranceSpec
        Train, then dev, then test utterances, grouped by speaker.
    """
    rng = np.random.default_rng([config.seed, 0])
    text_rng = np.random.default_rng([config.seed, 1])
    variants = _split_variants(config, rng)
    accents = [a for a, _ in config.accents]
    weights = np.array([w for _, w in config.accents], dtype=float)
    weights /= weights.sum()
    specs = []
    for split in SPLITS:
        pool = variants[split]
        order = list(rng.permutation(len(pool)))
        for k in range(config.n_speakers[split]):
            variant = pool[order[k % len(pool)]]
            accent = accents[int(rng.choice(len(accents), p=weights))]
            base_rate = rng.uniform(*config.rate_wpm)
            base_pitch = int(rng.integers(config.pitch[0], config.pitch[1] + 1))
            prange = int(rng.integers(config.pitch_range[0], config.pitch_range[1] + 1))
            speaker = f"{split}{k:03d}-{variant}-{accent}"
            for u in range(config.utts_per_speaker):
                text = generate_sentence(text_rng, config.min_words, config.max_words)
                jitter = rng.uniform(-config.rate_jitter, config.rate_jitter)
                pj = int(rng.integers(-config.pitch_jitter, config.pitch_jitter + 1))
                specs.append(
                    UtteranceSpec(
                        id=f"{speaker}-u{u}",
                        speaker=speaker,
                        split=split,
                        text=text,
                        accent=accent,
                        variant=variant,
                        rate=int(round(base_rate * (1 + jitter))),
                        pitch=min(100, max(0, base_pitch + pj)),
                        pitch_range=prange,
                        seed=int(rng.integers(1, 2**31 - 1)),
                        snr_db=float(rng.uniform(*config.snr_db)),
                        noise=str(config.noise_types[int(rng.integers(len(config.noise_types)))]),
                        level_dbfs=float(rng.uniform(*config.level_dbfs)),
                        lead_s=float(rng.uniform(*config.pad_s)),
                        tail_s=float(rng.uniform(*config.pad_s)),
                    )
                )
    return specs


def plan_jobs(specs: list[UtteranceSpec], speakers_per_job: int) -> list[list[UtteranceSpec]]:
    """Group utterances into worker jobs of at most ``speakers_per_job`` speakers.

    A job never spans two splits.  The grouping is part of the corpus
    definition: eSpeak's state carries over between the utterances of one
    process, so the same jobs give the same samples.

    Parameters
    ----------
    specs : list of UtteranceSpec
        Utterances in :func:`plan_corpus` order.
    speakers_per_job : int
        Speakers per job.

    Returns
    -------
    list of list of UtteranceSpec
        The jobs, in order; their concatenation is ``specs``.
    """
    jobs: list[list[UtteranceSpec]] = []
    current: list[UtteranceSpec] = []
    speakers: list[str] = []
    for s in specs:
        if current and (s.split != current[-1].split or (
            s.speaker not in speakers and len(speakers) == speakers_per_job
        )):
            jobs.append(current)
            current, speakers = [], []
        if s.speaker not in speakers:
            speakers.append(s.speaker)
        current.append(s)
    if current:
        jobs.append(current)
    return jobs
