"""The corpus entry points: :func:`generate_corpus` fills a cache, :func:`load_espeak` reads it.

:func:`generate_corpus` plans the corpus (:mod:`.plan`), renders its jobs in
parallel fresh worker processes (:mod:`.worker`), and writes the split files
and the manifest (:mod:`.cache`) into a temporary folder that is renamed into
place when complete.  :func:`load_espeak` generates on first use, then returns
a split as a :class:`~deltarnn.speech.datasets.base.SpeechDataset`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from deltarnn.speech.datasets.base import SpeechDataset, Utterance, normalize_utterances
from deltarnn.speech.datasets.features import compute_cmvn_stats

from .cache import GENERATOR_VERSION, cache_complete, config_hash, default_cache_dir, write_split
from .config import SPLITS, EspeakConfig, config_to_dict, get_config
from .engine import espeak_version
from .plan import plan_corpus, plan_jobs
from .worker import run_worker

__all__ = ["generate_corpus", "load_espeak"]


def generate_corpus(
    config: str | EspeakConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Generate a corpus into its cache folder (no-op if already there).

    Parameters
    ----------
    config : str or EspeakConfig, optional
        Configuration or its name (``"default"``, ``"tiny"``).
    cache_dir : str or os.PathLike, optional
        Folder for this corpus (default :func:`default_cache_dir`).
    workers : int, optional
        Parallel worker processes (default: the number of CPUs).  The
        result does not depend on it.
    progress : bool
        Show a tqdm progress bar.
    force : bool
        Regenerate even if the cache is complete (the old corpus is replaced).

    Returns
    -------
    pathlib.Path
        The cache folder, holding ``manifest.json`` and ``train.npz``,
        ``dev.npz``, ``test.npz``.
    """
    config = get_config(config)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(config)
    if folder.exists():
        if cache_complete(folder):
            if not force:
                return folder
        elif folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        else:
            raise FileExistsError(
                f"cache folder {folder} exists but holds no complete eSpeak corpus; "
                "remove it or choose another cache_dir"
            )
    workers = max(1, workers or os.cpu_count() or 1)
    specs = plan_corpus(config)
    jobs = plan_jobs(specs, config.speakers_per_job)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(specs), desc=f"eSpeak corpus '{config.name}'", unit="utt")
    try:
        results: dict[int, dict] = {}
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {
                pool.submit(run_worker, job, config, tmp / f"shard{i:05d}.npz"): i
                for i, job in enumerate(jobs)
            }
            for fut in as_completed(futures):
                i = futures[fut]
                results[i] = fut.result()
                (tmp / f"shard{i:05d}.npz").unlink(missing_ok=True)
                if bar is not None:
                    bar.update(len(jobs[i]))
        unmapped: Counter = Counter()
        for r in results.values():
            unmapped.update(json.loads(str(r["unmapped"])))
        summary = {}
        train_stats = None
        for split in SPLITS:
            idx = [i for i, job in enumerate(jobs) if job[0].split == split]
            split_specs = [s for i in idx for s in jobs[i]]
            shards = [results[i] for i in idx]
            write_split(tmp / f"{split}.npz", split_specs, shards)
            frames = int(sum(int(s["lengths"].sum()) for s in shards))
            samples = int(sum(int(s["samples"].sum()) for s in shards))
            summary[split] = {
                "utterances": len(split_specs),
                "speakers": len({s.speaker for s in split_specs}),
                "variants": sorted({s.variant for s in split_specs}),
                "frames": frames,
                "hours": samples / config.fbank.sample_rate / 3600.0,
            }
            if split == "train":
                mean, std = compute_cmvn_stats([s["features"] for s in shards])
                train_stats = {"mean": mean.tolist(), "std": std.tolist()}
        manifest = {
            "generator_version": GENERATOR_VERSION,
            "espeak_version": espeak_version(),
            "config_hash": config_hash(config),
            "config": config_to_dict(config),
            "splits": summary,
            "train_cmvn": train_stats,
            "unmapped": dict(unmapped),
            "generation_seconds": time.perf_counter() - t0,
            "workers": workers,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if force and folder.exists():
            shutil.rmtree(folder)
        try:
            tmp.rename(folder)
        except OSError:
            # Another process finished the same corpus first; keep theirs.
            if not cache_complete(folder):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    if unmapped:
        warnings.warn(
            f"eSpeak phonemes without a TIMIT mapping were labelled sil: {dict(unmapped)}",
            stacklevel=2,
        )
    return folder


def load_espeak(
    split: str,
    config: str | EspeakConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    normalize: str | None = "utterance",
    workers: int | None = None,
    progress: bool = True,
    **overrides,
) -> SpeechDataset:
    """Load one split of the eSpeak corpus, generating it on first use.

    Parameters
    ----------
    split : {"train", "dev", "test"}
        Split name.
    config : str or EspeakConfig, optional
        ``"default"`` (TIMIT-sized), ``"tiny"``, or a configuration.
    cache_dir : str or os.PathLike, optional
        Cache folder of this corpus (default
        ``~/.cache/deltarnn/espeak-<hash>``).
    normalize : {"utterance", "global", "none", None}
        Feature normalisation; ``"global"`` uses the training split's
        statistics stored in the manifest.
    workers : int, optional
        Worker processes used if the corpus must be generated.
    progress : bool
        Progress bar during generation.
    **overrides
        :class:`EspeakConfig` fields to change, e.g. ``seed=1``.

    Returns
    -------
    SpeechDataset
        Utterances in generation order (grouped by speaker).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown eSpeak corpus split {split!r}; choose one of {SPLITS}")
    config = get_config(config, **overrides)
    folder = generate_corpus(config, cache_dir, workers=workers, progress=progress)
    manifest = json.loads((folder / "manifest.json").read_text())
    with np.load(folder / f"{split}.npz") as z:
        feats, labels, offsets = z["features"], z["labels"], z["offsets"]
        ids, speakers = z["ids"], z["speakers"]
    utts = [
        Utterance(feats[a:b], labels[a:b], str(spk), str(uid))
        for a, b, spk, uid in zip(offsets[:-1], offsets[1:], speakers, ids)
    ]
    stats = None
    if normalize == "global":
        st = manifest["train_cmvn"]
        stats = (np.array(st["mean"]), np.array(st["std"]))
    utts = normalize_utterances(utts, normalize, stats)
    name = "espeak" if config.name == "default" else f"espeak-{config.name}"
    info = {
        "cache_dir": str(folder),
        "config": config,
        "manifest": manifest,
        "normalize": normalize,
    }
    if stats is not None:
        info["cmvn_stats"] = stats
    return SpeechDataset(name, split, utts, feature_dim=config.fbank.n_mels, info=info)
