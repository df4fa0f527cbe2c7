"""The Face2Scene restorer: Stage I -> frozen FaDeX -> MapNet -> one-step SD-Turbo.

Provenance: Face2Scene (arXiv 2603.16570) §3 (Figure 1): Stage I restores the face with a Ref-FR
model and references (§3.1); FaDeX turns the restored/degraded face pair into the degradation code
Z_face (§3.2); MapNet maps Z_face to 21 tokens that, with the positive text tokens, condition a
one-step SD-Turbo which restores the whole scene (§3.2, §7.2).

One call, :meth:`Face2Scene.restore`, takes a degraded scene (and the identity's references) and
returns the restored scene with a record of what was done. When Stage I finds no usable face (none,
or smaller than the FaDeX can encode into MapNet's 8x8 minimum: 16 px, §9.3, or 8 x the FaDeX's
total stride when that is larger), the scene is restored without degradation tokens (text tokens
only, the Table 3 "no degradation extraction" conditioning) and the result says so.

Checkpoints (:func:`save_checkpoint` / :meth:`Face2Scene.from_checkpoint`) are one safetensors
file holding only what training produced or needs besides the public base model: the LoRA weights
of the VAE encoder and UNet, the UNet's ``conv_in``, MapNet, the frozen FaDeX it was trained with,
and the configuration as JSON metadata (ranks, prompts, token setting, CFG, the base model's name).
The SD-Turbo base itself is never stored.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from inscene.config import RestorerSettings
from inscene.errors import BadInputError
from restorer.mapnet import MapNet
from restorer.onestep import OneStepSD

__all__ = [
    "CHECKPOINT_FORMAT",
    "Face2Scene",
    "RestoreResult",
    "load_checkpoint",
    "read_checkpoint_config",
    "resolve_base",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "inscene-face2scene/1"
CHECKPOINT_NAME = "face2scene.safetensors"
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
           "fp16": torch.float16, "float16": torch.float16}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """``fp32``/``bf16``/``fp16`` (or a torch dtype) -> torch dtype."""
    if isinstance(name, torch.dtype):
        return name
    try:
        return _DTYPES[name.lower()]
    except KeyError:
        raise BadInputError(f"unknown dtype {name!r}; use fp32, bf16 or fp16") from None


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` uint8 RGB -> ``1 x 3 x H x W`` float in [-1, 1]."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise BadInputError(f"expected an HxWx3 uint8 RGB image, got {arr.shape} {arr.dtype}")
    arr = np.ascontiguousarray(arr) if arr.flags.writeable else np.array(arr)
    return torch.from_numpy(arr).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)


def to_image(x: torch.Tensor) -> np.ndarray:
    """``1 x 3 x H x W`` in [-1, 1] -> ``H x W x 3`` uint8 RGB (rounded)."""
    arr = ((x[0].detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return arr.permute(1, 2, 0).cpu().numpy()


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize (Pillow) to ``(H, W)``; unchanged when already that size."""
    if image.shape[:2] == tuple(size):
        return image
    from PIL import Image

    h, w = size
    return np.asarray(Image.fromarray(image).resize((w, h), resample=Image.BICUBIC))


@dataclass
class RestoreResult:
    """One restored image and what was done.

    Attributes:
        image: the restored scene, ``H x W x 3`` uint8 RGB.
        face_found: Stage I produced a usable face pair (degradation tokens were used).
        reason: why not, when no face pair was used.
        tokens: degradation tokens in the conditioning (0 without a face).
        cfg_scale: the guidance scale used.
        stage1: Stage I's summary (face box, transform matrix, crop box), when it ran.
        timings: seconds per part (``stage1``, ``tokens``, ``restore``, ``total``).
    """

    image: np.ndarray
    face_found: bool
    reason: str = ""
    tokens: int = 0
    cfg_scale: float = 1.0
    stage1: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly record (no pixels)."""
        return {
            "face_found": self.face_found,
            "reason": self.reason,
            "tokens": self.tokens,
            "cfg_scale": self.cfg_scale,
            "height": int(self.image.shape[0]),
            "width": int(self.image.shape[1]),
            "stage1": self.stage1,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Face2Scene(nn.Module):
    """Stage I + FaDeX + MapNet + one-step SD-Turbo.

    Args:
        onestep: the one-step SD-Turbo restorer.
        mapnet: MapNet (None or ``num_tokens == 0``: no degradation tokens, the Table 3 ablation).
        fadex: the frozen FaDeX encoder (needed when MapNet is used).
        stage1: a :class:`restorer.stage1.Stage1` (needed to restore with degradation tokens); its
            ``min_face_px`` is raised to :attr:`min_face_px` when lower.
        cfg_scale: default guidance scale (1.10, §7.2).
        base: name or folder of the SD-Turbo base (recorded in checkpoints).
    """

    def __init__(
        self,
        onestep: OneStepSD,
        mapnet: MapNet | None,
        fadex: nn.Module | None,
        stage1: Any = None,
        *,
        cfg_scale: float = RestorerSettings().cfg_scale,
        base: str = "stabilityai/sd-turbo",
        prompts: tuple[str, str] | None = None,
    ) -> None:
        super().__init__()
        if mapnet is not None and mapnet.num_tokens > 0:
            if fadex is None:
                raise BadInputError("MapNet needs the FaDeX encoder whose code it maps")
            if mapnet.token_dim != onestep.cross_attention_dim:
                raise BadInputError(
                    f"MapNet token width {mapnet.token_dim} != UNet cross-attention width {onestep.cross_attention_dim}"
                )
        self.onestep = onestep
        self.mapnet = mapnet
        self.fadex = fadex
        if fadex is not None:
            fadex.eval().requires_grad_(False)
        self.stage1 = stage1
        if stage1 is not None and self.num_tokens > 0:
            stage1.min_face_px = max(int(stage1.min_face_px), self.min_face_px)
        self.cfg_scale = float(cfg_scale)
        self.base = str(base)
        rs = RestorerSettings()
        self.prompts = prompts or (rs.positive_prompt, rs.negative_prompt)

    @property
    def num_tokens(self) -> int:
        return 0 if self.mapnet is None else self.mapnet.num_tokens

    @property
    def min_face_px(self) -> int:
        """Smallest usable face crop side: the configured one (16 px, §9.3), raised to what the FaDeX
        needs for an 8x8 Z_face (:attr:`restorer.fadex.FadexConfig.min_face_px`)."""
        base = RestorerSettings().min_face_px
        fadex_cfg = getattr(self.fadex, "config", None)
        return max(base, fadex_cfg.min_face_px) if fadex_cfg is not None else base

    def train(self, mode: bool = True) -> Face2Scene:  # noqa: D102 - FaDeX stays frozen (BatchNorm in eval)
        super().train(mode)
        if self.fadex is not None:
            self.fadex.eval()
        return self

    # ---- pieces -----------------------------------------------------------------------------

    def degradation_tokens(self, pairs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor | None:
        """MapNet tokens of face pairs ``[x_HQ || x_LQ]`` in [0, 1] (``B x 6 x h x w``, or a list of
        ``1 x 6 x h_i x w_i`` when sizes differ); None when the model uses no tokens.
        """
        if self.num_tokens == 0:
            return None
        assert self.mapnet is not None and self.fadex is not None
        dev = next(self.mapnet.parameters()).device
        items = [pairs] if isinstance(pairs, torch.Tensor) else list(pairs)
        out = []
        for p in items:
            with torch.no_grad():
                z = self.fadex.encode(p.to(dev, torch.float32)).z_face
            out.append(self.mapnet(z))
        return torch.cat(out)

    # ---- inference ----------------------------------------------------------------------------

    @torch.no_grad()
    def restore(
        self,
        image: np.ndarray,
        references: Sequence[np.ndarray] = (),
        *,
        size: tuple[int, int] | None = None,
        cfg_scale: float | None = None,
        ground_truth: np.ndarray | None = None,
        face: Any = None,
        identity: str | None = None,
    ) -> RestoreResult:
        """Restore one degraded scene.

        Args:
            image: the degraded scene, ``H x W x 3`` uint8 RGB.
            references: the identity's reference photos (faces are detected and aligned) or aligned
                512 crops.
            size: output ``(H, W)`` (default: the input's); the LQ is resized to it (bicubic) first.
            cfg_scale: guidance scale (default: the model's, 1.10).
            ground_truth: the clean scene, for the ``gt`` Ref-FR backend only.
            face: landmarks to use instead of detecting (:class:`inscene.schema.Face`).
            identity: identity id (passed to Ref-FR).

        Returns:
            The restored image and what was done.
        """
        t0 = time.perf_counter()
        dev = self.onestep.device
        scale = self.cfg_scale if cfg_scale is None else float(cfg_scale)
        lq = resize_image(np.asarray(image), size) if size is not None else np.asarray(image)
        timings: dict[str, float] = {}
        tokens = None
        face_found, reason, s1 = False, "", {}
        if self.num_tokens > 0:
            if self.stage1 is None:
                raise BadInputError("this restorer has no Stage I: give it one (ref_fr, detector)")
            refs = self.stage1.align_references(list(references)) if references else []
            gt = resize_image(np.asarray(ground_truth), lq.shape[:2]) if ground_truth is not None else None
            res = self.stage1.run(lq, references=refs, ground_truth=gt, face=face, identity=identity)
            timings["stage1"] = time.perf_counter() - t0
            s1 = res.summary()
            if res.ok:
                from restorer.fadex import pair_tensor

                t1 = time.perf_counter()
                tokens = self.degradation_tokens(pair_tensor(res.x_hq, res.x_lq))
                _sync(dev)
                timings["tokens"] = time.perf_counter() - t1
                face_found = True
            else:
                reason = f"no usable face ({res.reason}): restored without degradation tokens"
        else:
            reason = "model without degradation tokens"
        t2 = time.perf_counter()
        x = to_tensor(lq).to(dev, self.onestep.dtype)
        if tokens is not None:
            tokens = tokens.to(dev, self.onestep.dtype)
        out = self.onestep(x, tokens, cfg_scale=scale)
        _sync(dev)
        timings["restore"] = time.perf_counter() - t2
        timings["total"] = time.perf_counter() - t0
        return RestoreResult(
            image=to_image(out), face_found=face_found, reason=reason,
            tokens=0 if tokens is None else int(tokens.shape[1]), cfg_scale=scale, stage1=s1, timings=timings,
        )

    # ---- checkpoints --------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "base": self.base,
            "onestep": self.onestep.config(),
            "mapnet": None if self.mapnet is None else self.mapnet.config(),
            "fadex": None if self.fadex is None else self.fadex.config.to_dict(),
            "cfg_scale": self.cfg_scale,
            "positive_prompt": self.prompts[0],
            "negative_prompt": self.prompts[1],
        }

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Every tensor a checkpoint stores (trainable part of SD-Turbo, MapNet, FaDeX)."""
        state = {f"onestep.{k}": v for k, v in self.onestep.trainable_state_dict().items()}
        if self.mapnet is not None:
            state.update({f"mapnet.{k}": v.detach() for k, v in self.mapnet.state_dict().items()})
        if self.fadex is not None:
            state.update({f"fadex.{k}": v.detach() for k, v in self.fadex.state_dict().items()})
        return state

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike[str],
        *,
        base: str | os.PathLike[str] | None = None,
        ref_fr: str = "faceme",
        ref_fr_opts: dict[str, Any] | None = None,
        detector: Any = "default",
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "fp32",
        cfg_scale: float | None = None,
        latent_tile: int | None = 128,
        vae_tile: int | None = 1024,
    ) -> Face2Scene:
        """Load a trained restorer: the SD-Turbo base plus a checkpoint.

        Args:
            checkpoint: a ``.safetensors`` checkpoint, or a training run folder (its latest one).
            base: SD-Turbo folder or Hub id (default: the one recorded in the checkpoint when it is
                a folder on this machine, else ``sd-turbo`` from :mod:`inscene.weights`).
            ref_fr: Stage I's Ref-FR backend (``faceme``, the paper's; ``gt``; ``passthrough``).
            ref_fr_opts: its options (e.g. ``path`` of the FaceMe checkout).
            detector: face detector name (default: the configured one) or instance.
            device: torch device.
            dtype: ``fp32``, ``bf16`` or ``fp16`` for SD-Turbo (FaDeX and MapNet run in fp32).
            cfg_scale: override the recorded guidance scale.
            latent_tile: UNet tile (latent px); None never tiles.
            vae_tile: VAE tile (px); None never tiles.

        Raises:
            BadInputError: not a Face2Scene checkpoint, or it does not match the base model.
            MissingWeightsError: the SD-Turbo base is not on this machine.
        """
        state, config = load_checkpoint(checkpoint)
        base_src = resolve_base(base, config.get("base"))
        oc = config["onestep"]
        onestep = OneStepSD.from_pretrained(
            base_src, positive_prompt=config["positive_prompt"], negative_prompt=config["negative_prompt"],
            device=device, vae_lora_rank=oc["vae_lora_rank"], unet_lora_rank=oc["unet_lora_rank"],
            lora_alpha=oc["lora_alpha"], timestep=oc["timestep"], latent_tile=latent_tile, vae_tile=vae_tile,
        )
        onestep.load_trainable_state_dict(_strip(state, "onestep."))
        mapnet = fadex = None
        if config.get("mapnet"):
            mapnet = MapNet(**config["mapnet"])
            _load(mapnet, _strip(state, "mapnet."), "MapNet")
        if config.get("fadex"):
            from restorer.fadex import FaDeX, FadexConfig

            fadex = FaDeX(FadexConfig.from_dict(config["fadex"]))
            _load(fadex, _strip(state, "fadex."), "FaDeX")
        stage1 = None
        if mapnet is not None and mapnet.num_tokens > 0:
            from restorer.stage1 import Stage1

            stage1 = Stage1(ref_fr, detector, ref_fr_opts=ref_fr_opts)  # min_face_px: raised in __init__
        model = cls(
            onestep, mapnet, fadex, stage1, cfg_scale=config["cfg_scale"] if cfg_scale is None else cfg_scale,
            base=config.get("base", str(base_src)), prompts=(config["positive_prompt"], config["negative_prompt"]),
        )
        model.to(device)
        model.onestep.to(dtype=parse_dtype(dtype))
        return model.eval()


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _load(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BadInputError(f"checkpoint's {what} does not match its config: {str(exc)[:200]}") from None


def save_checkpoint(model: Face2Scene, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s checkpoint (atomically) as one safetensors file with JSON metadata."""
    from safetensors.torch import save_file

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.checkpoint_state().items()}
    meta = {"format": CHECKPOINT_FORMAT, "config": json.dumps({**model.config(), **(extra or {})})}
    tmp = out.with_name(out.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(out)
    return out


def find_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file: ``path`` itself, or the newest one in a run folder."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        cands = sorted((p / "checkpoints").glob("step-*.safetensors")) or sorted(p.glob("*.safetensors"))
        if (p / CHECKPOINT_NAME).is_file():
            return p / CHECKPOINT_NAME
        if cands:
            return cands[-1]
    raise BadInputError(f"no Face2Scene checkpoint at {p}")


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and configuration of a checkpoint (file or run folder).

    Raises:
        BadInputError: unreadable, or not a Face2Scene checkpoint.
    """
    from safetensors.torch import load_file

    file = find_checkpoint(path)
    config = read_checkpoint_config(file)
    try:
        state = load_file(str(file))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds
        raise BadInputError(f"cannot read checkpoint {file}: {exc}") from None
    return state, config


def read_checkpoint_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The configuration of a checkpoint (file or run folder), read from its metadata only (no tensors).

    Raises:
        BadInputError: no checkpoint there, unreadable, or not a Face2Scene checkpoint.
    """
    from safetensors import safe_open

    file = find_checkpoint(path)
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds
        raise BadInputError(f"cannot read checkpoint {file}: {exc}") from None
    if meta.get("format") != CHECKPOINT_FORMAT or "config" not in meta:
        raise BadInputError(f"{file} is not a Face2Scene checkpoint (format {meta.get('format')!r})")
    return json.loads(meta["config"])


def resolve_base(base: str | os.PathLike[str] | None, recorded: str | None) -> str:
    """Where to load SD-Turbo from: ``base``; else the recorded folder if present; else the weights table.

    Raises:
        MissingWeightsError: SD-Turbo is not on this machine (one line, with the fetch command).
        BadInputError: the recorded base is a folder that is not on this machine and no SD-Turbo
            is installed either (the message names the recorded folder).
    """
    if base is not None:
        return str(base)
    if recorded and Path(recorded).is_dir():
        return recorded
    from inscene import weights
    from inscene.errors import MissingWeightsError

    try:
        return str(weights.locate("sd-turbo"))
    except MissingWeightsError as exc:
        if not recorded:
            raise
        raise BadInputError(
            f"the checkpoint's base model {recorded} is not on this machine and no SD-Turbo is installed "
            f"({str(exc).splitlines()[0]}); give --base DIR"
        ) from None
