"""Degradations: Real-ESRGAN's high-order pipeline as replayable parameters, presets d1–d4 and a
spatially varying blur (§3.2, §4.1, §7.4, §9.8).

    >>> from inscene.degradations import sample_params, apply
    >>> p = sample_params(seed=3, profile="realesrgan")      # a DegradationParams record
    >>> lq = apply(hq_uint8, p)                               # deterministic; same p = same G

See :mod:`inscene.degradations.pipeline` for the order of operations and the LQ-size choice.
"""

from inscene.degradations.config import PROFILES, DegradationProfile, get_profile
from inscene.degradations.describe import describe
from inscene.degradations.pipeline import apply, check_params, load_params, sample_params
from inscene.degradations.presets import PRESETS, preset

__all__ = [
    "PRESETS",
    "PROFILES",
    "DegradationProfile",
    "apply",
    "describe",
    "check_params",
    "get_profile",
    "load_params",
    "preset",
    "sample_params",
]

