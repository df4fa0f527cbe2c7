"""inscene: the InScene dataset, the Face2Scene restorer and the InScene benchmark.

Paper: Face2Scene, arXiv 2603.16570. See DESIGN.md for layout and contracts.
"""

__version__ = "0.1.0"


def load(source, subset, split, **kwargs):  # noqa: ANN001, ANN003, ANN201 - forwards to inscene.hub.load
    """Load an InScene subset/split with decoded images, records and references joined by identity.

    ``source`` is a published folder, a shard folder or a Hub repo id; see :func:`inscene.hub.load`.
    """
    from inscene.hub import load as _load

    return _load(source, subset, split, **kwargs)
