"""The voices the corpus speaks with: English accents, voice variants and their families.

A speaker is an eSpeak voice ``"<accent>+<variant>"``.  :data:`DEFAULT_ACCENTS`
are the accents and their sampling weights, :data:`VARIANTS` the voice
variants (timbres) with a nominal gender, and :data:`VARIANT_FAMILIES` groups
variants that share formant settings, so that a timbre never appears in two
splits.  Every accent here has a phone mapping in
:data:`~deltarnn.speech.datasets.espeak.phonemes.ACCENT_OVERRIDES`.
"""

from __future__ import annotations

__all__ = ["DEFAULT_ACCENTS", "VARIANT_FAMILIES", "VARIANTS"]

#: Default accents and their sampling weights (American English first).
DEFAULT_ACCENTS: tuple[tuple[str, float], ...] = (
    ("en-us", 4.0),
    ("en-us-nyc", 1.0),
    ("en", 1.0),
    ("en-gb-x-rp", 1.0),
    ("en-gb-scotland", 1.0),
    ("en-029", 1.0),
    ("en-gb-x-gbclan", 1.0),
    ("en-gb-x-gbcwmd", 1.0),
)

#: Groups of variants that share their formant settings (near-duplicate
#: timbres); a group never straddles two splits.
VARIANT_FAMILIES: dict[str, str] = {
    **dict.fromkeys(["Diogo", "Henrique", "Hugo", "michel", "miguel", "anika"], "br"),
    **dict.fromkeys(["Gene", "Gene2"], "gene"),
    **dict.fromkeys(["grandpa", "john"], "john"),
    **dict.fromkeys(["Nguyen", "m8"], "m8"),
    **dict.fromkeys(["klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6"], "klatt"),
    **dict.fromkeys(["edward", "edward2"], "edward"),
    **dict.fromkeys(["f2", "f5"], "f2"),
    **dict.fromkeys(["iven", "iven2", "iven3", "iven4"], "iven"),
    **dict.fromkeys(["steph", "steph2", "steph3"], "steph"),
    **dict.fromkeys(["Andy", "AnxiousAndy"], "andy"),
    **dict.fromkeys(["Mike", "mike2"], "mike"),
    **dict.fromkeys(["Mario", "Michael"], "mario"),
}

#: eSpeak voice variants used as speaker timbres, with a nominal gender.
#: Left out: robotic or echo-heavy variants (robosoft*, RicishayMax*,
#: UniRobot, anikaRobot, announcer, Demonic, Tweaky), whispered ones
#: (whisper, whisperf, caleb), the unstable ``fast`` and ``Mr serious``
#: (a space in its name).
VARIANTS: tuple[tuple[str, str], ...] = tuple(
    (v, "m")
    for v in """
    m1 m2 m3 m4 m5 m6 m7 m8 Alex Andy AnxiousAndy Denis Diogo Gene Gene2 Henrique
    Hugo Jacky Lee Marco Mario Michael Mike Nguyen Reed Storm adam antonio
    benjamin boris croak david ed edward edward2 grandpa gustave ian iven iven2
    iven3 iven4 john kaukovalta klatt klatt2 klatt3 klatt4 klatt5 klatt6 marcelo
    max michel miguel mike2 norbert pablo paul pedro quincy rob robert sandro
    travis victor
    """.split()
) + tuple(
    (v, "f")
    for v in """
    f1 f2 f3 f4 f5 Alicia Andrea Annie anika aunty belinda grandma linda shelby
    steph steph2 steph3 zac
    """.split()
)
