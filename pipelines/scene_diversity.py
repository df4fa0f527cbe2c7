"""Scene diversity of the synthetic subset: tag counts and a word cloud (Figure 4).

Provenance: Face2Scene §6.1 / Figure 4 shows a word cloud of semantic tags extracted from each
generated image with the RAM++ image tagger. RAM++ has no pip package and no weights within
reach of an offline machine, so the taggers here are:

- ``prompt`` (default, offline): the scene tags each prompt was built from (scene, details,
  lighting, weather; for ``--prompts`` files their ``tags`` or the vocabulary words in the text).
  This describes what was asked for, not what the image shows.
- ``clip`` (when its weights exist, ``inscene weights fetch clip-vit-large-patch14``): CLIP
  zero-shot tagging of each kept image against the prompt builder's scene vocabulary, the
  ``top_k`` best-matching tags per image. It describes what the image shows, within that
  vocabulary (RAM++ has an open vocabulary of ~6,400 tags).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from inscene.errors import BadInputError

SUBSET = "synthetic"


def _prompt_tags(dataset: Path, **_: Any) -> Counter[str]:
    counts: Counter[str] = Counter()
    for manifest in sorted(dataset.glob(f"*/{SUBSET}-*.parquet")):
        frame = pd.read_parquet(manifest, columns=["tags"])
        for tags in frame["tags"]:
            counts.update(json.loads(tags or "[]"))
    return counts


class ClipTagger:
    """CLIP zero-shot tags over a fixed vocabulary (prompt ``"a photo of {tag}"``).

    Args:
        path: a CLIP snapshot folder (``transformers`` layout); default: where ``inscene
            weights`` finds ``clip-vit-large-patch14``.
        vocabulary: candidate tags (default: the prompt builder's scene vocabulary).
        top_k: tags kept per image.
        device: ``auto`` (CUDA when visible) or a torch device.
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        vocabulary: list[str] | None = None,
        top_k: int = 5,
        device: str = "auto",
    ) -> None:
        from pipelines.prompts import scene_vocabulary

        self.path = path
        self.vocabulary = list(vocabulary or scene_vocabulary())
        self.top_k = top_k
        self.device = device
        self._state: dict[str, Any] = {}

    def load(self) -> None:
        """Locate the weights and build the model and the text embeddings of the vocabulary."""
        if self._state:
            return
        import torch
        from transformers import CLIPModel, CLIPProcessor

        from inscene import weights

        folder = weights.locate("clip-vit-large-patch14", self.path, check_requires=False)
        device = torch.device("cuda" if self.device == "auto" and torch.cuda.is_available() else
                              ("cpu" if self.device == "auto" else self.device))
        model = CLIPModel.from_pretrained(folder).to(device).eval()
        processor = CLIPProcessor.from_pretrained(folder)
        texts = processor(text=[f"a photo of {t}" for t in self.vocabulary], return_tensors="pt", padding=True)
        with torch.no_grad():
            text = model.get_text_features(**{k: v.to(device) for k, v in texts.items()})
        self._state = {"model": model, "processor": processor, "device": device,
                       "text": torch.nn.functional.normalize(_features(text), dim=-1)}

    def tags(self, rgb: Any) -> list[str]:
        """The ``top_k`` vocabulary tags closest to one RGB image."""
        import torch

        self.load()
        st = self._state
        pixels = st["processor"](images=[rgb], return_tensors="pt")["pixel_values"].to(st["device"])
        with torch.no_grad():
            image = _features(st["model"].get_image_features(pixel_values=pixels))
        image = torch.nn.functional.normalize(image, dim=-1)
        scores = (image @ st["text"].T)[0]
        best = torch.topk(scores, min(self.top_k, len(self.vocabulary))).indices.tolist()
        return [self.vocabulary[i] for i in best]


def _features(out: Any) -> Any:
    """The projected features: transformers 5 returns a model output (``pooler_output``), 4.x a tensor."""
    import torch

    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _clip_tags(dataset: Path, path: str | os.PathLike | None = None, **_: Any) -> Counter[str]:
    from inscene.shards import ShardReader

    tagger = ClipTagger(path)
    counts: Counter[str] = Counter()
    for split_dir in sorted(p for p in dataset.iterdir() if p.is_dir()):
        for sample in ShardReader(dataset, split=split_dir.name, subset=SUBSET):
            counts.update(tagger.tags(sample.images["png"]))
    return counts


TAGGERS: dict[str, Callable[..., Counter[str]]] = {"prompt": _prompt_tags, "clip": _clip_tags}


def scene_tags(dataset: str | os.PathLike, tagger: str = "prompt", **opts: Any) -> Counter[str]:
    """Tag counts over the kept scenes of a dataset folder (see the module doc for the taggers).

    Raises:
        BadInputError: unknown tagger.
        MissingWeightsError: ``clip`` without its weights.
    """
    if tagger not in TAGGERS:
        raise BadInputError(f"unknown tagger '{tagger}'; known: {', '.join(sorted(TAGGERS))}")
    return TAGGERS[tagger](Path(dataset), **opts)


def diversity_report(
    dataset: str | os.PathLike, folder: str | os.PathLike, tagger: str = "prompt", **opts: Any
) -> dict[str, Any]:
    """Write ``tags.csv`` (tag, count) and ``wordcloud.png`` (Figure 4) for the kept scenes.

    Returns:
        The tagger, the number of distinct tags and of tags, the ten most frequent, and the paths.
    """
    counts = scene_tags(dataset, tagger, **opts)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])), columns=["tag", "count"])
    frame.to_csv(folder / "tags.csv", index=False)
    cloud = folder / "wordcloud.png"
    if counts:
        from wordcloud import WordCloud

        WordCloud(width=1200, height=600, background_color="white", random_state=0, prefer_horizontal=0.9,
                  colormap="viridis").generate_from_frequencies(dict(counts)).to_file(str(cloud))
    return {"tagger": tagger, "distinct_tags": len(counts), "tags": int(sum(counts.values())),
            "top": frame.head(10).values.tolist(), "tags_csv": str(folder / "tags.csv"), "wordcloud": str(cloud)}
