"""Seeded scene prompts for the synthetic InScene subset (§6.1, Figure 5).

The paper's prompts have a fixed structure (§6.1, Figure 5): *the first and second sentences
describe the subject, the third and fourth describe the background in detail* "to increase the
chance of generating highly detailed scene images". The paper does not publish its prompt list,
so :func:`build_prompt` draws each slot from the documented vocabularies below with a seeded RNG:

1. framing + pose + clothing   ("A full-body photo of a person walking ..., wearing ...")
2. expression + accessory      ("They are smiling softly, holding a coffee cup.")
3. scene + three scene details ("The background is a busy city street with shop windows, ...")
4. lighting (+ weather outdoors) and an explicit request for a sharp, detailed background

The subject is "a person": CelebRef-HQ identities come without attributes, and the identity
(face) is supplied by the generator's identity conditioning, not by the text.

Every prompt carries the scene ``tags`` it was built from (scene name, details, lighting,
weather), which feed the scene-diversity report (Figure 4) without an image tagger.
``--prompts FILE.jsonl`` supplies one's own prompts instead (:func:`load_prompt_file`).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from inscene.errors import BadInputError

#: "A full-body photo" ... (sentence 1 opening). Full-body framing as in §6.1 ("full-body images").
FRAMINGS: tuple[str, ...] = (
    "A full-body photo",
    "A full-length photograph",
    "A wide full-body shot",
    "A candid full-body photograph",
    "A full-body street-style photo",
)
#: What the subject does (sentence 1).
POSES: tuple[str, ...] = (
    "standing upright",
    "walking toward the camera",
    "leaning against a railing",
    "sitting on a low wall",
    "standing with arms crossed",
    "walking along a path",
    "standing with hands in pockets",
    "turning slightly to the side",
    "standing next to a bicycle",
    "stepping forward mid-stride",
)
#: What the subject wears (sentence 1).
CLOTHING: tuple[str, ...] = (
    "a navy wool coat and dark trousers",
    "a white linen shirt and beige chinos",
    "a denim jacket and black jeans",
    "a red summer dress",
    "a grey hoodie and joggers",
    "a tailored charcoal suit",
    "a yellow raincoat and rubber boots",
    "a brown leather jacket and boots",
    "a striped t-shirt and shorts",
    "a knitted green sweater and corduroy trousers",
    "a black turtleneck and a camel overcoat",
    "a floral blouse and a pleated skirt",
)
#: Expression (sentence 2, "They are <expression>, <accessory>.").
EXPRESSIONS: tuple[str, ...] = (
    "smiling softly",
    "looking directly at the camera",
    "laughing",
    "gazing into the distance",
    "relaxed with a calm expression",
    "smiling with a confident look",
)
#: Accessory or action (sentence 2).
ACCESSORIES: tuple[str, ...] = (
    "carrying a backpack",
    "holding a coffee cup",
    "holding a closed umbrella",
    "with a scarf around the neck",
    "holding a phone",
    "wearing a wristwatch",
    "holding a book",
    "carrying a tote bag",
    "wearing sunglasses pushed up on the head",
)


@dataclass(frozen=True)
class Scene:
    """One background: its tag, how sentence 3 names it, the details it may show, indoor or not."""

    tag: str
    text: str
    details: tuple[str, ...]
    indoor: bool = False


#: Backgrounds (sentences 3-4). Each lists details of which three are drawn per prompt.
SCENES: tuple[Scene, ...] = (
    Scene("city street", "a busy city street", ("shop windows", "parked bicycles", "street lamps",
                                               "pedestrians", "traffic lights", "brick buildings")),
    Scene("park", "a green city park", ("tall oak trees", "a gravel path", "flower beds",
                                        "wooden benches", "a fountain", "a lawn")),
    Scene("beach", "a sandy beach", ("rolling waves", "beach umbrellas", "a wooden pier",
                                    "seagulls", "dunes with grass", "a lifeguard tower")),
    Scene("mountain trail", "a mountain trail", ("pine trees", "rocky peaks", "a wooden signpost",
                                                "wildflowers", "a distant valley", "a stone wall")),
    Scene("market", "an open-air market", ("fruit stalls", "striped awnings", "wooden crates",
                                          "hanging lanterns", "shoppers", "flower buckets")),
    Scene("library", "a grand library", ("tall bookshelves", "reading lamps", "a spiral staircase",
                                        "long wooden tables", "arched windows"), indoor=True),
    Scene("cafe", "a cozy cafe", ("an espresso machine", "chalkboard menus", "potted plants",
                                 "small round tables", "pendant lights"), indoor=True),
    Scene("train station", "a historic train station", ("a steel roof", "a departure board",
                                                       "a clock", "platforms", "a waiting train"), indoor=True),
    Scene("harbor", "a busy harbor", ("fishing boats", "stacked containers", "a lighthouse",
                                     "mooring ropes", "cranes", "seagulls")),
    Scene("snowy village", "a snowy mountain village", ("wooden chalets", "snow-covered roofs",
                                                       "a church tower", "pine trees", "string lights")),
    Scene("desert road", "a desert road", ("sand dunes", "cacti", "a vintage car",
                                          "red rock formations", "a road sign")),
    Scene("botanical garden", "a botanical garden", ("palm trees", "a glass greenhouse",
                                                    "exotic flowers", "a koi pond", "stone paths")),
    Scene("museum", "a museum hall", ("marble columns", "framed paintings", "sculptures",
                                     "a patterned floor", "skylights"), indoor=True),
    Scene("rooftop", "a rooftop terrace", ("a city skyline", "potted olive trees", "lounge chairs",
                                          "string lights", "a glass railing")),
    Scene("forest", "a dense forest", ("moss-covered trunks", "ferns", "a winding trail",
                                      "sunbeams through leaves", "a wooden bridge")),
    Scene("lakeside", "a calm lakeside", ("a wooden dock", "rowing boats", "reeds",
                                         "distant hills", "a stone cottage")),
    Scene("old town square", "an old town square", ("cobblestones", "a clock tower",
                                                   "cafe terraces", "colorful facades", "pigeons")),
    Scene("subway", "a subway platform", ("tiled walls", "a train arriving", "route maps",
                                         "commuters", "fluorescent lights"), indoor=True),
)
#: Light for outdoor scenes (sentence 4).
OUTDOOR_LIGHTING: tuple[str, ...] = (
    "soft morning light",
    "bright midday sun",
    "warm golden-hour light",
    "even overcast daylight",
    "the blue light of dusk",
)
#: Light for indoor scenes (sentence 4).
INDOOR_LIGHTING: tuple[str, ...] = (
    "warm indoor lighting",
    "daylight from large windows",
    "soft ambient light",
    "bright even lighting",
)
#: Weather for outdoor scenes (sentence 4), as (phrase, tag).
WEATHER: tuple[tuple[str, str], ...] = (
    ("on a clear day", "clear sky"),
    ("under a light drizzle", "rain"),
    ("on a misty morning", "fog"),
    ("with scattered clouds", "clouds"),
    ("during light snowfall", "snow"),
    ("on a windy afternoon", "wind"),
)

VOCABULARIES: dict[str, Sequence[object]] = {
    "framing": FRAMINGS,
    "pose": POSES,
    "clothing": CLOTHING,
    "expression": EXPRESSIONS,
    "accessory": ACCESSORIES,
    "scene": SCENES,
    "outdoor_lighting": OUTDOOR_LIGHTING,
    "indoor_lighting": INDOOR_LIGHTING,
    "weather": WEATHER,
}

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_SEED_LIMIT = 2**53


@dataclass(frozen=True)
class Prompt:
    """A prompt and where it came from.

    Attributes:
        text: the prompt given to the generator.
        tags: scene tags (scene, details, lighting, weather) for the diversity report.
        source: ``builder`` (seeded vocabularies) or ``file:<name>:<line>``.
        choices: the vocabulary entry drawn for each slot (builder prompts).
    """

    text: str
    tags: tuple[str, ...] = ()
    source: str = "builder"
    choices: dict[str, str] = field(default_factory=dict)

    @property
    def sentences(self) -> list[str]:
        """The prompt split into sentences."""
        return split_sentences(self.text)


def split_sentences(text: str) -> list[str]:
    """Split a prompt into sentences (ends ``.``/``!``/``?`` followed by a capital)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def derive_seed(*parts: object) -> int:
    """A seed in ``[0, 2**53)`` from any parts, stable across runs, machines and Python versions."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") % _SEED_LIMIT


def _article(phrase: str) -> str:
    return phrase.split(" ", 1)[1] if phrase.startswith(("a ", "an ", "the ")) else phrase


def build_prompt(seed: int) -> Prompt:
    """The prompt for ``seed``: two subject sentences, two background sentences (§6.1).

    Args:
        seed: any int; the same seed always gives the same prompt.
    """
    rng = random.Random(derive_seed("prompt", seed))
    framing = rng.choice(FRAMINGS)
    pose = rng.choice(POSES)
    clothing = rng.choice(CLOTHING)
    expression = rng.choice(EXPRESSIONS)
    accessory = rng.choice(ACCESSORIES)
    scene = rng.choice(SCENES)
    d1, d2, d3 = rng.sample(scene.details, 3)
    s1 = f"{framing} of a person {pose}, wearing {clothing}."
    s2 = f"They are {expression}, {accessory}."
    s3 = f"The background is {scene.text} with {d1}, {d2} and {d3}."
    choices = {
        "framing": framing, "pose": pose, "clothing": clothing, "expression": expression,
        "accessory": accessory, "scene": scene.tag, "details": f"{d1}; {d2}; {d3}",
    }
    tags = [scene.tag, _article(d1), _article(d2), _article(d3)]
    if scene.indoor:
        light = rng.choice(INDOOR_LIGHTING)
        s4 = f"The scene is lit by {light}, and the whole background is sharp and richly detailed."
        tags.append("indoor")
    else:
        light = rng.choice(OUTDOOR_LIGHTING)
        weather, weather_tag = rng.choice(WEATHER)
        s4 = f"The scene is lit by {light} {weather}, and the whole background is sharp and richly detailed."
        choices["weather"] = weather
        tags += ["outdoor", weather_tag]
    choices["lighting"] = light
    tags.append(_article(light))
    return Prompt(" ".join((s1, s2, s3, s4)), tuple(tags), "builder", choices)


def scene_vocabulary() -> list[str]:
    """Every scene tag the builder can emit (what an image tagger is asked about)."""
    tags: list[str] = []
    for scene in SCENES:
        tags.append(scene.tag)
        tags += [_article(d) for d in scene.details]
    tags += [t for _, t in WEATHER] + [_article(x) for x in OUTDOOR_LIGHTING + INDOOR_LIGHTING]
    return list(dict.fromkeys(tags))


def tags_in_text(text: str) -> tuple[str, ...]:
    """Scene-vocabulary tags that occur in a free-text prompt (for user prompts without tags)."""
    low = text.lower()
    return tuple(t for t in scene_vocabulary() if re.search(rf"\b{re.escape(t.lower())}\b", low))


@dataclass(frozen=True)
class PromptFile:
    """Prompts read from a JSONL file: global ones and per-identity ones."""

    path: str
    shared: tuple[Prompt, ...]
    by_identity: dict[str, tuple[Prompt, ...]]

    def choose(self, identity: str, seed: int) -> Prompt:
        """The prompt for one attempt: a seeded choice among the identity's prompts, else the shared ones."""
        pool = self.by_identity.get(identity) or self.shared
        if not pool:
            raise BadInputError(f"{self.path}: no prompt for identity '{identity}' and no shared prompt")
        return pool[random.Random(derive_seed("prompt-file", seed)).randrange(len(pool))]


def load_prompt_file(path: str | Path) -> PromptFile:
    """Read ``--prompts FILE.jsonl``.

    Each line is a JSON string (the prompt) or an object ``{"prompt": str, "tags": [str, ...],
    "identity": str}``; ``tags`` and ``identity`` are optional. A prompt with ``identity`` is used
    only for that identity (folder name); the others are shared by all identities. Tags default
    to the scene-vocabulary words found in the text. Blank lines are skipped.

    Raises:
        BadInputError: unreadable file, invalid JSON or a line without a non-empty prompt (the
            message names the line).
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read prompts file {p}: {exc}") from None
    shared: list[Prompt] = []
    by_identity: dict[str, list[Prompt]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{p}:{number}: not JSON ({exc.msg})") from None
        if isinstance(obj, str):
            obj = {"prompt": obj}
        text = obj.get("prompt") if isinstance(obj, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise BadInputError(f"{p}:{number}: need a non-empty \"prompt\" string")
        tags = obj.get("tags")
        if tags is None:
            tags = tags_in_text(text)
        elif not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise BadInputError(f"{p}:{number}: \"tags\" must be a list of strings")
        prompt = Prompt(text.strip(), tuple(tags), f"file:{p.name}:{number}")
        identity = obj.get("identity")
        if identity is None:
            shared.append(prompt)
        else:
            by_identity.setdefault(str(identity), []).append(prompt)
    if not shared and not by_identity:
        raise BadInputError(f"prompts file {p} has no prompts")
    return PromptFile(str(p), tuple(shared), {k: tuple(v) for k, v in by_identity.items()})
