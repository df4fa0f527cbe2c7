"""Short human summaries of degradation parameters (preview grids, logs)."""

from __future__ import annotations

import math

from inscene.schema import BlurKernel, DegradationParams, DegradationStage, PSFField

_SHORT = {
    "iso": "iso", "aniso": "aniso", "generalized_iso": "g-iso", "generalized_aniso": "g-aniso",
    "plateau_iso": "p-iso", "plateau_aniso": "p-aniso", "sinc": "sinc", "delta": "delta",
}


def _kernel(k: BlurKernel | None) -> str:
    if k is None:
        return "-"
    if k.kind == "sinc":
        return f"sinc{k.size} wc={k.cutoff / math.pi:.2f}pi"
    if k.kind == "delta":
        return "delta"
    s = f"{_SHORT[k.kind]}{k.size} s={k.sigma_x:.2f}"
    if k.kind.endswith("aniso"):
        s += f"/{k.sigma_y:.2f} r={math.degrees(k.rotation):.0f}d"
    if k.beta is not None:
        s += f" b={k.beta:.2f}"
    return s


def _field(f: PSFField) -> str:
    return f"PSF field s={f.sigma_center:.2f}->{f.sigma_corner:.2f} a={f.anisotropy:.2f}"


def _stage(st: DegradationStage, name: str) -> str:
    blur = _field(st.psf_field) if st.psf_field is not None else _kernel(st.blur)
    noise = []
    for n in st.noise:
        g = "gray " if n.gray else ""
        noise.append(f"{g}gauss s={n.sigma:.1f}" if n.kind == "gaussian" else f"{g}poisson x{n.scale:.2f}")
    parts = [f"{name}: blur {blur}", f"resize x{st.resize.factor:.2f} {st.resize.mode}",
             "noise " + (", ".join(noise) or "-")]
    if st.jpeg_quality is not None:
        parts.append(f"jpeg {st.jpeg_quality}")
    return "; ".join(parts)


def describe(p: DegradationParams) -> str:
    """Multi-line summary: one line per stage and one for the final step."""
    head = f"{p.pipeline} x{p.scale} out={p.output}" + (" usm" if p.usm else "")
    if p.identity:
        return head + "\nno degradation (identity)"
    if not p.replayable:
        return head + "\n(no operator)"
    f = p.final
    order = "resize+sinc, jpeg" if f.order == "resize_sinc_jpeg" else "jpeg, resize+sinc"
    final = f"final: {order}; {f.resize_mode}; sinc {_kernel(f.sinc)}; jpeg {f.jpeg_quality}"
    return "\n".join([head, _stage(p.stage1, "s1"), _stage(p.stage2, "s2"), final])
