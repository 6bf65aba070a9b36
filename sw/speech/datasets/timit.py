"""Loader for the TIMIT corpus (LDC93S1), for users who hold a copy.

Expected layout (names are matched case-insensitively)::

    ROOT/TRAIN/DR1/FCJF0/SI1027.WAV   NIST SPHERE, 16-bit PCM
    ROOT/TRAIN/DR1/FCJF0/SI1027.PHN   "start end label" per line, in samples
    ...
    ROOT/TEST/DR8/MPAM0/SX379.WAV

``ROOT`` may also be a folder holding such a tree one or two levels down
(``ROOT/TIMIT/TRAIN``, ``ROOT/data/TRAIN``...).  Waveforms already converted
to RIFF/WAVE (``SI1027.WAV`` or ``SI1027.WAV.wav``) are read too.

Splits follow the standard recipe (Kaldi ``egs/timit``): the SA dialect
sentences are excluded everywhere; ``"train"`` is the 462 speakers of
``TRAIN/`` (3696 utterances), ``"dev"`` the 50 speakers of
:data:`DEV_SPEAKERS` (400 utterances) and ``"test"`` the 24 speakers of the
core test set :data:`CORE_TEST_SPEAKERS` (192 utterances), all from
``TEST/``.  ``"test-full"`` is the complete test set (all 168 ``TEST/``
speakers, 1344 utterances; it overlaps ``"dev"``).

Frame labels come from the ``.PHN`` files folded to the 39 classes
(:mod:`deltarnn.speech.datasets.phones`); a frame takes the label of the phone that
contains its centre sample.
"""

from __future__ import annotations

import os
import wave
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deltarnn.speech.datasets.base import SpeechDataset, Utterance, normalize_utterances
from deltarnn.speech.datasets.features import FbankConfig, log_mel_fbank, num_frames, segments_to_frame_labels
from deltarnn.speech.datasets.phones import PHONE_TO_ID, SIL_ID, fold_segments

__all__ = [
    "TIMIT_ENV",
    "SPLITS",
    "DEV_SPEAKERS",
    "CORE_TEST_SPEAKERS",
    "SphereError",
    "TimitNotFoundError",
    "TimitEntry",
    "read_sphere",
    "read_wav",
    "read_phn",
    "find_timit_root",
    "list_utterances",
    "load_utterance",
    "load_timit",
]

#: Environment variable naming the TIMIT root when ``root`` is not given.
TIMIT_ENV = "DELTARNN_TIMIT"

#: Split names accepted by :func:`load_timit`.
SPLITS = ("train", "dev", "test", "test-full")

#: The 50 development speakers (from ``TEST/``; Kaldi ``conf/dev_spk.list``).
DEV_SPEAKERS: frozenset[str] = frozenset(
    """
    faks0 fdac1 fjem0 mgwt0 mjar0 mmdb1 mmdm2 mpdf0 fcmh0 fkms0 mbdg0 mbwm0
    mcsh0 fadg0 fdms0 fedw0 mgjf0 mglb0 mrtk0 mtaa0 mtdt0 mthc0 mwjg0 fnmr0
    frew0 fsem0 mbns0 mmjr0 mdls0 mdlf0 mdvc0 mers0 fmah0 fdrw0 mrcs0 mrjm4
    fcal1 mmwh0 fjsj0 majc0 mjsw0 mreb0 fgjd0 fjmg0 mroa0 mteb0 mjfc0 mrjr0
    fmml0 mrws1
    """.split()
)

#: The 24 core test speakers (2 male, 1 female per dialect region; Kaldi
#: ``conf/test_spk.list``).
CORE_TEST_SPEAKERS: frozenset[str] = frozenset(
    """
    mdab0 mwbt0 felc0 mtas1 mwew0 fpas0 mjmp0 mlnt0 fpkt0 mlll0 mtls0 fjlm0
    mbpm0 mklt0 fnlp0 mcmj0 mjdh0 fmgd0 mgrt0 mnjm0 fdhc0 mjln0 mpam0 fmld0
    """.split()
)

assert len(DEV_SPEAKERS) == 50 and len(CORE_TEST_SPEAKERS) == 24
assert not DEV_SPEAKERS & CORE_TEST_SPEAKERS


class SphereError(ValueError):
    """A waveform file that this reader cannot decode."""


class TimitNotFoundError(FileNotFoundError):
    """The TIMIT corpus was not found where it was looked for."""


def _parse_sphere_header(head: bytes, path) -> dict:
    lines = head.split(b"\n")
    if not lines or lines[0].strip() != b"NIST_1A":
        raise SphereError(f"{path}: not a NIST SPHERE file (no NIST_1A magic)")
    fields: dict[str, object] = {}
    for raw in lines[2:]:
        line = raw.strip().decode("ascii", errors="replace")
        if not line or line.startswith(";"):
            continue
        if line == "end_head":
            break
        parts = line.split(None, 2)
        if len(parts) < 3:
            continue
        key, kind, value = parts
        if kind == "-i":
            fields[key] = int(value)
        elif kind == "-r":
            fields[key] = float(value)
        else:  # -sN: string of N characters
            try:
                n = int(kind[2:])
                fields[key] = value[:n]
            except ValueError:
                fields[key] = value
    return fields


def read_sphere(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a NIST SPHERE file of uncompressed 16-bit PCM.

    The header (normally 1024 bytes; its size is the header's second line)
    is parsed here; no external tool is needed.  Only single-channel
    ``pcm`` coding with 2-byte samples is accepted (byte order ``01``,
    little endian, as in TIMIT; ``10``, big endian, is converted).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.WAV`` file.

    Returns
    -------
    (numpy.ndarray, int)
        int16 samples and the sample rate in Hz.

    Raises
    ------
    SphereError
        For a non-SPHERE file, compressed (shorten, wavpack...) data, or
        another sample format.
    """
    path = Path(path)
    data = path.read_bytes()
    if not data.startswith(b"NIST_1A"):
        raise SphereError(f"{path}: not a NIST SPHERE file (no NIST_1A magic)")
    try:
        header_size = int(data.split(b"\n", 2)[1].strip())
    except (IndexError, ValueError) as e:
        raise SphereError(f"{path}: unreadable SPHERE header size") from e
    fields = _parse_sphere_header(data[:header_size], path)
    coding = str(fields.get("sample_coding", "pcm")).lower()
    if coding != "pcm":
        kind = "shorten-compressed " if "shorten" in coding else ""
        raise SphereError(
            f"{path}: {kind}SPHERE file (sample_coding {coding!r}); only uncompressed "
            "'pcm' is "
            "supported. Decompress the corpus first, e.g. with "
            "'sph2pipe -f sph IN OUT' (or 'sox IN -e signed-integer OUT.wav')."
        )
    n_bytes = int(fields.get("sample_n_bytes", 2))
    channels = int(fields.get("channel_count", 1))
    if n_bytes != 2:
        raise SphereError(f"{path}: {n_bytes}-byte samples; only 16-bit PCM is supported")
    if channels != 1:
        raise SphereError(f"{path}: {channels} channels; only mono is supported")
    order = str(fields.get("sample_byte_format", "01"))
    if order == "01":
        dtype = np.dtype("<i2")
    elif order == "10":
        dtype = np.dtype(">i2")
    else:
        raise SphereError(f"{path}: unsupported sample_byte_format {order!r}")
    body = data[header_size:]
    count = int(fields.get("sample_count", len(body) // 2))
    if count * 2 > len(body):
        raise SphereError(
            f"{path}: header says {count} samples but only {len(body) // 2} are present"
        )
    samples = np.frombuffer(body, dtype=dtype, count=count).astype(np.int16)
    return samples, int(fields.get("sample_rate", 16000))


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a TIMIT waveform: NIST SPHERE (:func:`read_sphere`) or RIFF/WAVE.

    Parameters
    ----------
    path : str or os.PathLike
        Waveform file.

    Returns
    -------
    (numpy.ndarray, int)
        int16 samples and sample rate.
    """
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"RIFF":
        return read_sphere(path)
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise SphereError(f"{path}: only mono 16-bit WAVE files are supported")
        frames = w.readframes(w.getnframes())
        return np.frombuffer(frames, dtype="<i2").astype(np.int16), w.getframerate()


def read_phn(path: str | os.PathLike) -> list[tuple[int, int, str]]:
    """Read a TIMIT ``.PHN`` file.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.PHN`` file.

    Returns
    -------
    list of (int, int, str)
        ``(start_sample, end_sample, label)`` with lower-case labels.
    """
    segments = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise ValueError(f"{path}:{lineno}: expected 'start end phone', got {line!r}")
        segments.append((int(parts[0]), int(parts[1]), parts[2].lower()))
    return segments


def _child(folder: Path, name: str) -> Path | None:
    """Sub-folder of ``folder`` called ``name`` in any letter case."""
    try:
        for p in folder.iterdir():
            if p.is_dir() and p.name.lower() == name:
                return p
    except OSError:
        pass
    return None


def find_timit_root(root: str | os.PathLike | None = None) -> Path:
    """Locate the TIMIT tree (the folder holding ``TRAIN/`` and ``TEST/``).

    Parameters
    ----------
    root : str or os.PathLike, optional
        Where the corpus is; when ``None`` the environment variable
        ``DELTARNN_TIMIT`` is used.

    Returns
    -------
    pathlib.Path
        The folder whose children are ``TRAIN`` and ``TEST``.

    Raises
    ------
    TimitNotFoundError
        With a message naming the path (and ``DELTARNN_TIMIT``) that was
        tried.
    """
    source = "root argument"
    if root is None:
        root = os.environ.get(TIMIT_ENV)
        source = f"environment variable {TIMIT_ENV}"
        if not root:
            raise TimitNotFoundError(
                f"TIMIT location not given: pass root=/path/to/TIMIT or set the "
                f"environment variable {TIMIT_ENV} to the folder holding TRAIN/ and TEST/ "
                "(TIMIT is licensed by the LDC, catalogue LDC93S1; without it, use the "
                "'espeak' corpus)"
            )
    base = Path(root).expanduser()
    if not base.is_dir():
        raise TimitNotFoundError(
            f"TIMIT root {str(base)!r} (from the {source}) does not exist or is not a "
            f"folder; set root=... or {TIMIT_ENV} to the folder holding TRAIN/ and TEST/"
        )
    queue = [(base, 0)]
    while queue:
        folder, depth = queue.pop(0)
        if _child(folder, "train") and _child(folder, "test"):
            return folder
        if depth < 2:
            try:
                subs = sorted(p for p in folder.iterdir() if p.is_dir())
            except OSError:
                subs = []
            queue.extend((p, depth + 1) for p in subs)
    raise TimitNotFoundError(
        f"no TRAIN/ and TEST/ folders found in TIMIT root {str(base)!r} (from the "
        f"{source}) or two levels below it"
    )


@dataclass(frozen=True)
class TimitEntry:
    """Location of one TIMIT utterance.

    Attributes
    ----------
    part : str
        ``"train"`` or ``"test"`` (the corpus folder).
    dialect : str
        ``"dr1"`` .. ``"dr8"``.
    speaker : str
        Lower-case speaker folder name, e.g. ``"fcjf0"``.
    name : str
        Lower-case sentence name, e.g. ``"si1027"``.
    wav : pathlib.Path
        Waveform file.
    phn : pathlib.Path
        Phone transcription.
    """

    part: str
    dialect: str
    speaker: str
    name: str
    wav: Path
    phn: Path

    @property
    def id(self) -> str:
        """``"part/dialect/speaker/name"``, e.g. ``"train/dr1/fcjf0/si1027"``."""
        return f"{self.part}/{self.dialect}/{self.speaker}/{self.name}"


def _wav_for(phn: Path, files: dict[str, Path]) -> Path | None:
    stem = phn.name[: -len(".phn")].lower()
    for candidate in (stem + ".wav", stem + ".wav.wav"):
        if candidate in files:
            return files[candidate]
    return None


def list_utterances(
    root: str | os.PathLike | None, split: str, include_sa: bool = False
) -> list[TimitEntry]:
    """The utterances of a split, sorted by id.

    Parameters
    ----------
    root : str or os.PathLike or None
        TIMIT location (see :func:`find_timit_root`).
    split : {"train", "dev", "test", "test-full"}
        Split name.
    include_sa : bool
        Keep the SA1/SA2 dialect sentences (excluded by the standard recipe).

    Returns
    -------
    list of TimitEntry
        Utterances that have both a ``.PHN`` and a waveform file.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown TIMIT split {split!r}; choose one of {SPLITS}")
    top = find_timit_root(root)
    part = "train" if split == "train" else "test"
    part_dir = _child(top, part)
    entries = []
    for dr in sorted(p for p in part_dir.iterdir() if p.is_dir()):
        for spk in sorted(p for p in dr.iterdir() if p.is_dir()):
            speaker = spk.name.lower()
            if split == "dev" and speaker not in DEV_SPEAKERS:
                continue
            if split == "test" and speaker not in CORE_TEST_SPEAKERS:
                continue
            files = {p.name.lower(): p for p in spk.iterdir() if p.is_file()}
            for lname, phn in sorted(files.items()):
                if not lname.endswith(".phn"):
                    continue
                name = lname[: -len(".phn")]
                if name.startswith("sa") and not include_sa:
                    continue
                wav = _wav_for(phn, files)
                if wav is None:
                    continue
                entries.append(TimitEntry(part, dr.name.lower(), speaker, name, wav, phn))
    entries.sort(key=lambda e: e.id)
    return entries


def load_utterance(entry: TimitEntry, fbank: FbankConfig | None = None) -> Utterance:
    """Features and 39-class frame labels of one TIMIT utterance.

    Parameters
    ----------
    entry : TimitEntry
        From :func:`list_utterances`.
    fbank : FbankConfig, optional
        Feature parameters (defaults: 40 log mel bands, 25/10 ms).

    Returns
    -------
    Utterance
        Raw (unnormalised) features and labels of equal length.
    """
    fbank = fbank or FbankConfig()
    samples, rate = read_wav(entry.wav)
    if rate != fbank.sample_rate:
        raise SphereError(
            f"{entry.wav}: sample rate {rate} Hz, but the features expect "
            f"{fbank.sample_rate} Hz"
        )
    feats = log_mel_fbank(samples, config=fbank)
    n = num_frames(len(samples), fbank.win_length, fbank.hop_length)
    segs = [(s, e, PHONE_TO_ID[p]) for s, e, p in fold_segments(read_phn(entry.phn))]
    labels = segments_to_frame_labels(segs, n, SIL_ID, fbank.win_length, fbank.hop_length)
    return Utterance(feats, labels, entry.speaker, entry.id)


def _progress(it: Iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, unit="utt")


def load_timit(
    split: str,
    root: str | os.PathLike | None = None,
    normalize: str | None = "utterance",
    fbank: FbankConfig | None = None,
    n_mels: int | None = None,
    include_sa: bool = False,
    progress: bool = False,
) -> SpeechDataset:
    """Load one TIMIT split as a :class:`~deltarnn.speech.datasets.base.SpeechDataset`.

    Parameters
    ----------
    split : {"train", "dev", "test", "test-full"}
        Split name (see the module documentation).
    root : str or os.PathLike, optional
        TIMIT location; defaults to ``$DELTARNN_TIMIT``.
    normalize : {"utterance", "global", "none", None}
        Feature normalisation.  ``"global"`` uses the mean and standard
        deviation of the training split (which is read for that).
    fbank : FbankConfig, optional
        Feature parameters.
    n_mels : int, optional
        Shortcut to change only the number of mel bands.
    include_sa : bool
        Keep the SA sentences.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    SpeechDataset
        ``name="timit"``, sorted by utterance id.
    """
    fbank = fbank or FbankConfig()
    if n_mels is not None:
        fbank = FbankConfig(**{**fbank.__dict__, "n_mels": int(n_mels)})
    entries = list_utterances(root, split, include_sa)
    if not entries:
        raise TimitNotFoundError(
            f"TIMIT split {split!r} under {find_timit_root(root)} has no utterances "
            "(.PHN files with a matching waveform)"
        )
    utts = [
        load_utterance(e, fbank)
        for e in _progress(entries, len(entries), f"TIMIT {split}", progress)
    ]
    info: dict = {"root": str(find_timit_root(root)), "fbank": fbank, "normalize": normalize}
    stats = None
    if normalize == "global":
        from deltarnn.speech.datasets.features import compute_cmvn_stats

        train = utts if split == "train" else [
            load_utterance(e, fbank) for e in list_utterances(root, "train", include_sa)
        ]
        stats = compute_cmvn_stats([u.features for u in train])
        info["cmvn_stats"] = stats
    utts = normalize_utterances(utts, normalize, stats)
    return SpeechDataset("timit", split, utts, feature_dim=fbank.n_mels, info=info)
