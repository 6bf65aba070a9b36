"""The ctypes binding of libespeak-ng: load the library, synthesise, collect phoneme events.

libespeak-ng and its data come from the ``espeakng_loader`` wheel, so nothing
is installed system-wide.  :class:`EspeakEngine` drives the library in
synchronous mode with phoneme events (``espeakINITIALIZE_PHONEME_EVENTS``): a
synth callback collects the 22050 Hz samples and the ``espeakEVENT_PHONEME``
events, whose ``sample`` field is the output sample at which eSpeak starts
generating that phoneme.  :func:`espeak_version` reads the library's version
without initialising the synthesiser (it enters the corpus cache key).

Nothing here knows about phones, corpora or caches.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

__all__ = ["EspeakError", "EspeakEngine", "espeak_version"]

# eSpeak audio output modes and options (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ESPEAK_RATE = 1
_ESPEAK_PITCH = 3
_ESPEAK_RANGE = 4
_ESPEAK_SAMPLE_RATE = 22050


class EspeakError(RuntimeError):
    """eSpeak NG could not be loaded or failed to synthesise."""


class _Event(ctypes.Structure):
    """``espeak_EVENT`` of ``speak_lib.h``."""

    class _Id(ctypes.Union):
        _fields_ = [
            ("number", ctypes.c_int),
            ("name", ctypes.c_char_p),
            ("string", ctypes.c_char * 8),
        ]

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _Id),
    ]


# t_espeak_callback: int SynthCallback(short *wav, int numsamples, espeak_EVENT *events)
_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


def _load_library():
    """Load libespeak-ng from ``espeakng_loader`` and declare the functions used.

    Returns
    -------
    (ctypes.CDLL, str)
        The library, with argument and result types set, and the path of
        eSpeak NG's data folder.

    Raises
    ------
    EspeakError
        If the package is missing or the library cannot be loaded.
    """
    try:
        import espeakng_loader
    except ImportError as e:  # pragma: no cover - dependency of the project
        raise EspeakError(
            "the eSpeak corpus needs the 'espeakng-loader' package (pip install "
            "espeakng-loader)"
        ) from e
    try:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path()
    except (OSError, RuntimeError) as e:
        raise EspeakError(f"cannot load libespeak-ng from espeakng_loader: {e}") from e
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
        ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]  # fmt: skip
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    lib.espeak_Info.restype = ctypes.c_char_p
    if hasattr(lib, "espeak_ng_SetRandSeed"):
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = ctypes.c_int
    return lib, data


_version_cache: str | None = None


def espeak_version() -> str:
    """eSpeak NG version string (without initialising the synthesiser).

    Returns
    -------
    str
        The version reported by ``espeak_Info``, or ``"unavailable"`` if
        the library cannot be loaded; cached for the process.
    """
    global _version_cache
    if _version_cache is None:
        try:
            lib, _ = _load_library()
            _version_cache = lib.espeak_Info(None).decode()
        except EspeakError:
            _version_cache = "unavailable"
    return _version_cache


class EspeakEngine:
    """Thin ctypes wrapper of libespeak-ng in synchronous mode.

    libespeak-ng is a process-wide singleton: use :meth:`get` rather than
    creating several engines.  Not thread-safe.

    Notes
    -----
    Synthesis depends slightly on the utterances synthesised before in the
    same process (see :mod:`deltarnn.speech.datasets.espeak`);
    :func:`~deltarnn.speech.datasets.espeak.corpus.generate_corpus` uses fresh
    processes for that reason.
    """

    _instance: EspeakEngine | None = None
    _lock = threading.Lock()

    def __init__(self):
        self._lib, data = _load_library()
        rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS,
            0,
            data.encode(),
            _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT,
        )
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate}) with data at {data}")
        #: Output sample rate of eSpeak (22050 Hz).
        self.sample_rate = int(rate)
        self.version = self._lib.espeak_Info(None).decode()
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        self._callback = _SynthCallback(self._on_synth)  # keep a reference
        self._lib.espeak_SetSynthCallback(self._callback)
        try:
            self._libc = ctypes.CDLL(None)
        except OSError:  # pragma: no cover - non-POSIX
            self._libc = None
        self._voice: str | None = None

    @classmethod
    def get(cls) -> EspeakEngine:
        """The process-wide engine, created on first use.

        Returns
        -------
        EspeakEngine
            The engine.
        """
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _on_synth(self, wav, n, events) -> int:
        """Synth callback: keep the samples and the phoneme events of one chunk.

        Parameters
        ----------
        wav : ctypes.POINTER(ctypes.c_short)
            ``n`` int16 samples.
        n : int
            Number of samples (0 at the end of the utterance).
        events : ctypes.POINTER(_Event)
            Events of this chunk, terminated by ``espeakEVENT_LIST_TERMINATED``.

        Returns
        -------
        int
            0: continue synthesis.
        """
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                name = ev.id.string.decode("ascii", errors="replace")
                self._events.append((int(ev.sample), name))
            i += 1
        return 0

    def set_voice(self, name: str) -> None:
        """Select a voice such as ``"en-us+m3"``.

        Parameters
        ----------
        name : str
            ``"<language>[+<variant>]"``.
        """
        if name != self._voice:
            if self._lib.espeak_SetVoiceByName(name.encode()) != 0:
                raise EspeakError(f"eSpeak has no voice {name!r}")
            self._voice = name

    def synthesize(
        self,
        text: str,
        voice: str = "en-us",
        rate: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        seed: int | None = 0,
    ) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """Speak ``text``; return the waveform and the phoneme events.

        Parameters
        ----------
        text : str
            Text to speak.
        voice : str
            eSpeak voice name, e.g. ``"en-us+f2"``.
        rate : int
            Words per minute (80-450).
        pitch, pitch_range : int
            eSpeak pitch and range parameters (0-100).
        seed : int or None
            Seed of eSpeak's noise generator (``None``: leave it).

        Returns
        -------
        (numpy.ndarray, list of (int, str))
            int16 samples at :attr:`sample_rate`, and
            ``(sample, mnemonic)`` of each phoneme, in order.
        """
        self.set_voice(voice)
        lib = self._lib
        lib.espeak_SetParameter(_ESPEAK_RATE, int(rate), 0)
        lib.espeak_SetParameter(_ESPEAK_PITCH, int(pitch), 0)
        lib.espeak_SetParameter(_ESPEAK_RANGE, int(pitch_range), 0)
        if seed is not None:
            if hasattr(lib, "espeak_ng_SetRandSeed"):
                lib.espeak_ng_SetRandSeed(int(seed))
            if self._libc is not None:
                self._libc.srand(ctypes.c_uint(int(seed) & 0xFFFFFFFF))
        self._chunks, self._events = [], []
        data = text.encode("utf-8")
        err = lib.espeak_Synth(
            data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        if err != 0:
            raise EspeakError(f"espeak_Synth failed with error {err}")
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return audio.astype(np.int16, copy=False), list(self._events)

