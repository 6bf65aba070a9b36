"""A small English grammar that generates read-speech prompts.

The synthetic corpus (:mod:`deltarnn.speech.datasets.espeak`) needs many different,
plausible sentences with a broad phonetic coverage (every one of the 39
phone classes, including rare ones such as the ``zh`` of *measure*, the
``oy`` of *boy* or the ``uh`` of *book*).  This module ships the word lists
and a handful of sentence templates; :func:`generate_sentences` draws from
them with a seeded :class:`numpy.random.Generator`, so the same seed always
gives the same sentences.
"""

from __future__ import annotations

import numpy as np

__all__ = ["WORDS", "generate_sentence", "generate_sentences", "vocabulary"]

_NAMES = """
Anna George Judy Thomas Zoe Vincent Sheila Joshua Ruth Oliver Yvonne Charles
Nathan Irene Howard Agatha Beth Dwight Eugene Gwen Kevin Lloyd Marsha Owen
Paula Quentin Roger Sophia Theodore Ursula Walter Xavier Hugo Jasmine Bruce
Claire Douglas Esther Felix Gloria Harvey Ingrid Jerome Karen Luther Maggie
Norman Olivia Patrick Rosa Samuel Tracy Victor Wendy Abigail Boyd Cecil Doris
Edgar Fiona Gordon Hazel Isaac Joyce Kurt Lorraine Maurice Nora Otto Pearl
""".split()

_ADJECTIVES = """
old young big small long short dark bright quiet loud warm cold heavy light
greasy oily shiny dusty muddy sharp smooth rough thick thin tall narrow wide
yellow purple orange golden silver brown pale crimson beige cheap expensive
clever foolish gentle angry happy lazy busy careful strange usual unusual
pleasant awful curious cautious famous jealous nervous anxious tired eager
fresh stale sweet sour bitter spicy frozen broken empty crowded lonely
ancient modern rural tiny huge wooden leather plastic woolen noisy soft
""".split()

# (singular, plural) pairs; plurals are spelled out to avoid a rule engine.
_NOUNS = [
    ("dog", "dogs"), ("cat", "cats"), ("horse", "horses"), ("boy", "boys"),
    ("girl", "girls"), ("child", "children"), ("woman", "women"), ("man", "men"),
    ("teacher", "teachers"), ("doctor", "doctors"), ("farmer", "farmers"),
    ("lawyer", "lawyers"), ("sailor", "sailors"), ("soldier", "soldiers"),
    ("nurse", "nurses"), ("judge", "judges"), ("thief", "thieves"),
    ("book", "books"), ("cookie", "cookies"), ("wolf", "wolves"), ("foot", "feet"),
    ("tooth", "teeth"), ("mouse", "mice"), ("goose", "geese"), ("knife", "knives"),
    ("garage", "garages"), ("treasure", "treasures"), ("measure", "measures"),
    ("vision", "visions"), ("decision", "decisions"), ("television", "televisions"),
    ("leisure", "leisures"), ("closure", "closures"), ("collision", "collisions"),
    ("toy", "toys"), ("coin", "coins"), ("voice", "voices"), ("oyster", "oysters"),
    ("point", "points"), ("choice", "choices"), ("joint", "joints"),
    ("suit", "suits"), ("rag", "rags"), ("water", "water"), ("year", "years"),
    ("wash", "washes"), ("church", "churches"), ("judge", "judges"),
    ("bridge", "bridges"), ("engine", "engines"), ("jacket", "jackets"),
    ("thumb", "thumbs"), ("feather", "feathers"), ("mother", "mothers"),
    ("father", "fathers"), ("brother", "brothers"), ("weather", "weathers"),
    ("path", "paths"), ("month", "months"), ("bath", "baths"), ("theatre", "theatres"),
    ("king", "kings"), ("ring", "rings"), ("song", "songs"), ("wing", "wings"),
    ("morning", "mornings"), ("evening", "evenings"), ("finger", "fingers"),
    ("window", "windows"), ("yellow", "yellows"), ("pillow", "pillows"),
    ("house", "houses"), ("cloud", "clouds"), ("owl", "owls"), ("town", "towns"),
    ("island", "islands"), ("tiger", "tigers"), ("lion", "lions"),
    ("table", "tables"), ("apple", "apples"), ("bottle", "bottles"),
    ("kettle", "kettles"), ("pencil", "pencils"), ("puzzle", "puzzles"),
    ("button", "buttons"), ("kitten", "kittens"), ("mountain", "mountains"),
    ("garden", "gardens"), ("rhythm", "rhythms"), ("bottom", "bottoms"),
    ("butter", "butter"), ("letter", "letters"), ("ladder", "ladders"),
    ("city", "cities"), ("party", "parties"), ("body", "bodies"),
    ("river", "rivers"), ("valley", "valleys"), ("forest", "forests"),
    ("desert", "deserts"), ("ocean", "oceans"), ("harbor", "harbors"),
    ("kitchen", "kitchens"), ("chair", "chairs"), ("shoe", "shoes"),
    ("spoon", "spoons"), ("moon", "moons"), ("juice", "juices"), ("fruit", "fruits"),
    ("pool", "pools"), ("school", "schools"), ("rule", "rules"), ("tune", "tunes"),
    ("cake", "cakes"), ("plate", "plates"), ("train", "trains"), ("day", "days"),
    ("bike", "bikes"), ("kite", "kites"), ("tie", "ties"), ("sky", "skies"),
    ("boat", "boats"), ("goat", "goats"), ("road", "roads"), ("phone", "phones"),
    ("nut", "nuts"), ("cup", "cups"), ("bus", "buses"), ("drum", "drums"),
    ("hat", "hats"), ("bag", "bags"), ("map", "maps"), ("lamp", "lamps"),
    ("bed", "beds"), ("egg", "eggs"), ("desk", "desks"), ("pen", "pens"),
    ("fish", "fish"), ("ship", "ships"), ("hill", "hills"), ("gift", "gifts"),
    ("sheep", "sheep"), ("tree", "trees"), ("key", "keys"), ("field", "fields"),
    ("car", "cars"), ("star", "stars"), ("jar", "jars"), ("heart", "hearts"),
    ("dollar", "dollars"), ("doll", "dolls"), ("box", "boxes"), ("clock", "clocks"),
    ("dog", "dogs"), ("door", "doors"), ("floor", "floors"), ("storm", "storms"),
    ("horn", "horns"), ("bird", "birds"), ("shirt", "shirts"), ("nurse", "nurses"),
    ("word", "words"), ("girl", "girls"), ("hair", "hair"), ("bear", "bears"),
    ("pear", "pears"), ("stair", "stairs"), ("ear", "ears"), ("deer", "deer"),
    ("tour", "tours"), ("hour", "hours"), ("fire", "fires"), ("tire", "tires"),
    ("zebra", "zebras"), ("lizard", "lizards"), ("puzzle", "puzzles"),
    ("vegetable", "vegetables"), ("umbrella", "umbrellas"), ("banana", "bananas"),
    ("potato", "potatoes"), ("tomato", "tomatoes"), ("piano", "pianos"),
    ("photograph", "photographs"), ("computer", "computers"),
    ("hospital", "hospitals"), ("library", "libraries"), ("museum", "museums"),
    ("newspaper", "newspapers"), ("calendar", "calendars"), ("chimney", "chimneys"),
    ("nephew", "nephews"), ("cousin", "cousins"), ("neighbor", "neighbors"),
    ("stranger", "strangers"), ("customer", "customers"), ("visitor", "visitors"),
    ("rabbit", "rabbits"), ("chicken", "chickens"), ("monkey", "monkeys"),
    ("squirrel", "squirrels"), ("butterfly", "butterflies"), ("beetle", "beetles"),
]  # fmt: skip
_NOUNS = list(dict.fromkeys(_NOUNS))  # drop repeats, keep order

# (base, past) pairs of transitive verbs.
_VERBS_T = [
    ("find", "found"), ("wash", "washed"), ("carry", "carried"), ("paint", "painted"),
    ("measure", "measured"), ("treasure", "treasured"), ("enjoy", "enjoyed"),
    ("destroy", "destroyed"), ("avoid", "avoided"), ("join", "joined"),
    ("push", "pushed"), ("pull", "pulled"), ("cook", "cooked"), ("book", "booked"),
    ("watch", "watched"), ("catch", "caught"), ("fetch", "fetched"),
    ("judge", "judged"), ("change", "changed"), ("arrange", "arranged"),
    ("thank", "thanked"), ("throw", "threw"), ("bathe", "bathed"),
    ("bring", "brought"), ("sing", "sang"), ("hang", "hung"), ("ring", "rang"),
    ("see", "saw"), ("meet", "met"), ("keep", "kept"), ("feed", "fed"),
    ("sell", "sold"), ("tell", "told"), ("hold", "held"), ("build", "built"),
    ("buy", "bought"), ("take", "took"), ("make", "made"), ("break", "broke"),
    ("drive", "drove"), ("ride", "rode"), ("write", "wrote"), ("hide", "hid"),
    ("choose", "chose"), ("lose", "lost"), ("move", "moved"), ("prove", "proved"),
    ("use", "used"), ("fix", "fixed"), ("mix", "mixed"), ("kiss", "kissed"),
    ("miss", "missed"), ("visit", "visited"), ("follow", "followed"),
    ("borrow", "borrowed"), ("open", "opened"), ("close", "closed"),
    ("cover", "covered"), ("deliver", "delivered"), ("remember", "remembered"),
    ("answer", "answered"), ("offer", "offered"), ("order", "ordered"),
    ("study", "studied"), ("copy", "copied"), ("bury", "buried"), ("worry", "worried"),
    ("draw", "drew"), ("show", "showed"), ("know", "knew"), ("grow", "grew"),
    ("chase", "chased"), ("scare", "scared"), ("share", "shared"), ("steal", "stole"),
    ("shake", "shook"), ("check", "checked"), ("pack", "packed"), ("kick", "kicked"),
    ("lift", "lifted"), ("drop", "dropped"), ("hug", "hugged"), ("rub", "rubbed"),
    ("describe", "described"), ("discover", "discovered"), ("examine", "examined"),
    ("admire", "admired"), ("ignore", "ignored"), ("prefer", "preferred"),
]  # fmt: skip

# (base, past) pairs of intransitive verbs.
_VERBS_I = [
    ("sleep", "slept"), ("laugh", "laughed"), ("arrive", "arrived"),
    ("vanish", "vanished"), ("shout", "shouted"), ("whisper", "whispered"),
    ("wait", "waited"), ("swim", "swam"), ("run", "ran"), ("fall", "fell"),
    ("sit", "sat"), ("stand", "stood"), ("smile", "smiled"), ("cry", "cried"),
    ("dance", "danced"), ("travel", "traveled"), ("wander", "wandered"),
    ("appear", "appeared"), ("disappear", "disappeared"), ("shiver", "shivered"),
    ("breathe", "breathed"), ("rejoice", "rejoiced"), ("hurry", "hurried"),
    ("return", "returned"), ("work", "worked"), ("play", "played"), ("pray", "prayed"),
    ("snore", "snored"), ("sneeze", "sneezed"), ("cough", "coughed"),
]  # fmt: skip

_ADVERBS = """
quickly slowly carefully quietly loudly yesterday today tonight again twice
outside inside early late once there suddenly gently
happily easily badly politely eagerly anxiously calmly roughly smoothly
""".split()

_PREPOSITIONS = """
in on under behind near beside across through over without with for from
into toward around between above below along inside outside beneath beyond
""".split()

_DETERMINERS = "the a this that every my your our their his her one".split()
_PLURAL_DETERMINERS = "the these those some many few my your our their".split()
_NUMBERS = """
two three four five six seven eight nine ten eleven twelve twenty thirty
forty fifty sixty seventy eighty ninety
""".split()
_PRONOUNS = "he she they we you it".split()
_TIMES = [
    "on " + day
    for day in "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
] + ["last night", "next week", "in the morning", "at noon"]

#: All word lists, by category (read-only view for documentation and tests).
WORDS: dict[str, tuple] = {
    "names": tuple(_NAMES),
    "adjectives": tuple(_ADJECTIVES),
    "nouns": tuple(_NOUNS),
    "transitive_verbs": tuple(_VERBS_T),
    "intransitive_verbs": tuple(_VERBS_I),
    "adverbs": tuple(_ADVERBS),
    "prepositions": tuple(_PREPOSITIONS),
    "determiners": tuple(_DETERMINERS),
    "plural_determiners": tuple(_PLURAL_DETERMINERS),
    "numbers": tuple(_NUMBERS),
    "pronouns": tuple(_PRONOUNS),
}


def vocabulary() -> list[str]:
    """Every word the grammar can produce, sorted.

    Returns
    -------
    list of str
        Distinct lower-case words.
    """
    words: set[str] = set()
    for key, items in WORDS.items():
        for item in items:
            for w in item if isinstance(item, tuple) else (item,):
                words.update(w.lower().split())
    words.update("did was were there said that and but while because before after "
                 "where why when is not can please which who".split())
    return sorted(words)


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _noun_phrase(
    rng: np.random.Generator, allow_name: bool = True, allow_plural: bool = True
) -> str:
    r = rng.random()
    if allow_name and r < 0.2:
        return _pick(rng, _NAMES)
    if allow_plural and r < 0.35:
        adj = _pick(rng, _ADJECTIVES) + " " if rng.random() < 0.6 else ""
        det = _pick(rng, _NUMBERS + _PLURAL_DETERMINERS)
        return f"{det} {adj}{_pick(rng, _NOUNS)[1]}"
    det = _pick(rng, _DETERMINERS)
    adj = ""
    if rng.random() < 0.6:
        adj = _pick(rng, _ADJECTIVES) + " "
        if rng.random() < 0.15:
            adj += _pick(rng, _ADJECTIVES) + " "
    noun = _pick(rng, _NOUNS)[0]
    if det == "a" and (adj or noun)[0] in "aeiou":
        det = "an"
    return f"{det} {adj}{noun}"


def _subject(rng: np.random.Generator) -> str:
    return _pick(rng, _PRONOUNS) if rng.random() < 0.1 else _noun_phrase(rng)


def _pp(rng: np.random.Generator) -> str:
    return f"{_pick(rng, _PREPOSITIONS)} {_noun_phrase(rng, allow_name=False)}"


def _tail(rng: np.random.Generator) -> str:
    parts = []
    if rng.random() < 0.5:
        parts.append(_pp(rng))
    if rng.random() < 0.3:
        parts.append(_pick(rng, _ADVERBS))
    elif rng.random() < 0.1:
        parts.append(_pick(rng, _TIMES))
    return (" " + " ".join(parts)) if parts else ""


def _clause(rng: np.random.Generator) -> str:
    if rng.random() < 0.7:
        verb = _pick(rng, _VERBS_T)[1]
        return f"{_subject(rng)} {verb} {_noun_phrase(rng)}{_tail(rng)}"
    verb = _pick(rng, _VERBS_I)[1]
    return f"{_subject(rng)} {verb}{_tail(rng)}"


def _template(rng: np.random.Generator) -> tuple[str, str]:
    """One raw sentence and its final punctuation."""
    k = rng.random()
    if k < 0.40:
        return _clause(rng), "."
    if k < 0.50:
        conj = _pick(rng, ["and", "but", "while", "because", "before", "after"])
        return f"{_clause(rng)}, {conj} {_clause(rng)}", "."
    if k < 0.58:
        return f"{_pick(rng, _NAMES)} said that {_clause(rng)}", "."
    if k < 0.68:
        verb = _pick(rng, _VERBS_T)[0]
        return f"did {_subject(rng)} {verb} {_noun_phrase(rng)}{_tail(rng)}", "?"
    if k < 0.74:
        wh = _pick(rng, ["where", "why", "when"])
        verb = _pick(rng, _VERBS_T)[0]
        return f"{wh} did {_pick(rng, _NAMES)} {verb} {_noun_phrase(rng)}", "?"
    if k < 0.82:
        verb = _pick(rng, _VERBS_T)[0]
        please = "please " if rng.random() < 0.3 else ""
        return f"{please}{verb} {_noun_phrase(rng, allow_name=False)} {_pp(rng)}", "."
    if k < 0.90:
        a, b = _pick(rng, _ADJECTIVES), _pick(rng, _ADJECTIVES)
        be = "was" if rng.random() < 0.7 else "is"
        return f"{_noun_phrase(rng, allow_plural=False)} {be} {a} and {b}", "."
    n = _pick(rng, _NUMBERS)
    adj = _pick(rng, _ADJECTIVES) + " " if rng.random() < 0.5 else ""
    return f"there were {n} {adj}{_pick(rng, _NOUNS)[1]} {_pp(rng)}", "."


def generate_sentence(
    rng: np.random.Generator, min_words: int = 4, max_words: int = 14
) -> str:
    """One sentence with ``min_words`` to ``max_words`` words.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness (the result is a function of its state).
    min_words, max_words : int
        Length limits in words; drafts outside them are redrawn.

    Returns
    -------
    str
        A capitalised sentence ending in ``.`` or ``?``.
    """
    if not 1 <= min_words <= max_words:
        raise ValueError("need 1 <= min_words <= max_words")
    for _ in range(1000):
        body, end = _template(rng)
        n = len(body.replace(",", " ").split())
        if min_words <= n <= max_words:
            return body[0].upper() + body[1:] + end
    # Always succeeds for sane limits; fall back to truncation otherwise.
    words = body.split()[:max_words]
    return " ".join(words).capitalize() + "."


def generate_sentences(
    n: int, seed: int = 0, min_words: int = 4, max_words: int = 14
) -> list[str]:
    """``n`` sentences drawn from the grammar with a fixed seed.

    Parameters
    ----------
    n : int
        Number of sentences.
    seed : int
        Seed of the generator; the same seed gives the same list.
    min_words, max_words : int
        Length limits in words.

    Returns
    -------
    list of str
        The sentences.
    """
    rng = np.random.default_rng(seed)
    return [generate_sentence(rng, min_words, max_words) for _ in range(n)]
