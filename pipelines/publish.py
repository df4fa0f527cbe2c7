"""The demo's last step: a dry-run `inscene publish` of its tiny dataset, loaded back (issue 11).

The publishing itself lives in :mod:`inscene.hub`; this module only supplies what the demo needs:
a declaration for its sample photos and the round trip through the Hub folder layout.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

DEMO_REPO = "inscene-demo/inscene-demo"
DEMO_DECLARATION = {
    "format": "inscene-declaration/1",
    "pretty_name": "InScene demo",
    "subsets": {
        "demo": {
            "license": "other",
            "license_name": "inscene-demo-sample-images",
            "consent": "Sample photos shipped with scikit-image and insightface, used only to exercise the toolkit "
            "offline; this folder is a dry run and is not uploaded.",
            "description": "The demo's photos and generated decoder test images, with the faces found in them.",
            "source": "scikit-image data, insightface sample images, generated files",
        }
    },
}


def demo_step(data_root: Path, workdir: Path) -> dict[str, Any]:
    """Dry-run publish ``data_root`` (the demo's dataset folder) into ``workdir/hub`` and load it back.

    Offline: the card is parsed with huggingface_hub's card tools, every config and split is
    loaded with HF ``datasets``, then ``inscene.load`` reads the demo split back through both
    backends.

    Returns:
        ``{"folder", "configs", "samples", "hf_rows", "webdataset_rows", "reused", "seconds"}``.
    """
    import inscene
    from inscene.hub import publish

    t0 = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    declaration = workdir / "demo-declaration.json"
    declaration.write_text(json.dumps(DEMO_DECLARATION, indent=2) + "\n")
    result = publish([data_root], DEMO_REPO, out=workdir / "hub", dry_run=True, declaration=declaration,
                     check="full")
    staged = result.staged
    group = staged.groups[0]
    ds = inscene.load(staged.out, group.subset, group.split, cache_dir=workdir / "hf-cache")
    hf_rows = len(ds)
    if hf_rows:
        ds[0]  # decode one row: images, record, references
    wds_rows = sum(1 for _ in inscene.load(staged.out, group.subset, group.split, backend="webdataset"))
    return {
        "folder": staged.out,
        "configs": staged.subsets,
        "samples": sum(g.images for g in staged.groups),
        "hf_rows": hf_rows,
        "webdataset_rows": wds_rows,
        "reused": result.reused,
        "seconds": time.perf_counter() - t0,
    }
