"""``inscene train restorer``: train MapNet + LoRA/conv_in of the one-step SD-Turbo (Face2Scene Stage II).

Provenance: Face2Scene (arXiv 2603.16570) §3.3 (L2 + LPIPS + DINO-discriminator GAN, Eqs. 2-3),
§4.1 (five precomputed LQ versions per clean image, one sampled per visit; face pairs from Ref-FR, and
the ground-truth face as x_HQ for the non-reference subset; 20K iterations at effective batch 64 on
eight A100s; lr 2e-5; LoRA ranks 16/32; lambda 2.0/5.0/0.5), §7.2 (online negative-prompt learning
with probability p_n), Table 5 / Figure 9 (ranks and CFG are options).

Data. A training dataset written by ``inscene degrade`` (per clean image ``hq.<ext>``, ``lq{k}.png``
and its metadata with the faces found in the clean image), plus, optionally, face-pair datasets from
``inscene restorer prepare-pairs`` (their ``own`` pairs: Stage I's x_HQ/x_LQ for version k of a
scene). For each visit of a scene one version k is drawn; its face pair is the prepared one when
there is one (reference data, e.g. FaceMe output), else the ground-truth pair: the clean and
degraded crops of the face's pair box (the paper's treatment of the non-reference subset). Scenes
are randomly cropped to ``crop`` px (S3Diff trains at 512); the face pair always comes from the
whole scene, since the degradation code describes the image, not the crop. Scenes with neither a
prepared pair nor a usable recorded face (>= 16 px, §9.3, or 8 x the FaDeX's total stride when that is
larger, so MapNet gets its 8x8 Z_face) are left out when the dataset is indexed
(and counted): batches are never shortened, so every process of a distributed run does the same
work. Should a usable face's pair box still fall outside the image, the centre square of the scene
stands in for that one pair.

Objective per step (our reading of Eq. 3, where the paper is silent on the schedule): one forward
of the generator with per-sample prompts (negative prompt and the LQ as target with probability
p_n, §7.2; both branches carry the sample's degradation tokens), loss
``lambda_2 MSE + lambda_LPIPS LPIPS + lambda_GAN L_G`` where the adversarial term covers the
positive-prompt samples only (a negative sample's target is its LQ, which the discriminator calls
fake), through the discriminator with its heads frozen; then one discriminator step on
``[HQ ; prediction]``. With gradient accumulation both optimisers step on the mean gradient of all
micro-batches of the step (the heads' gradients come from the discriminator loss only). S3Diff
instead takes three optimiser steps per iteration (reconstruction, generator, discriminator) with
two generator forwards.
Optimisers: AdamW (lr 2e-5, weight decay 1e-2, S3Diff's), 500 warm-up steps then constant (S3Diff's
``lr_warmup_steps``; ``--warmup-steps``), gradient clipping at 1.0; the discriminator heads use the same settings.

Scale. ``accelerate`` runs it on CPU, one GPU, or many GPUs/nodes (``accelerate launch``, see
``restorer/configs/accelerate_8gpu.yaml``); gradient accumulation and mixed precision (bf16/fp16)
are options; the effective batch is ``batch_size x grad_accum x processes`` (paper: 64).

Outputs in the run folder: ``checkpoints/step-NNNNNNN.safetensors`` (restorer checkpoints: LoRA,
conv_in, MapNet, FaDeX and the config, see :func:`restorer.model.save_checkpoint`; the newest is
also ``face2scene.safetensors``), ``state/`` (discriminator heads as safetensors, optimiser and
scheduler state via ``torch.save``/``torch.load(weights_only=True)``, RNG states, step) for
``--resume``, ``loss.jsonl`` (one line per logged step) and ``config.json``.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inscene.config import RestorerSettings
from inscene.errors import BadInputError

__all__ = [
    "RestorerTrainConfig",
    "RestorerTrainer",
    "SceneDataset",
    "TrainResult",
    "build_trainer_model",
    "run_training",
]

_RS = RestorerSettings()
_IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")


@dataclass
class RestorerTrainConfig:
    """Everything a run depends on (recorded as ``config.json`` and in every checkpoint).

    Attributes:
        base: SD-Turbo folder or Hub id (``stabilityai/sd-turbo``; offline machines: the folder
            ``inscene weights fetch sd-turbo`` fills, found automatically when this is the Hub id).
        fadex: trained FaDeX run folder or weights (``inscene train fadex``); None only with
            ``num_tokens = 0``.
        num_tokens: degradation tokens: 21 (paper), 5, 1 (Table 6) or 0 (Table 3 ablation).
        mapnet_channels, mapnet_heads: MapNet width and DegAttn heads (512, 8; §7.2).
        vae_lora_rank, unet_lora_rank, lora_alpha: LoRA (16, 32, 8; Table 5).
        iterations: optimiser steps (20K, §4.1).
        batch_size: scenes per device and micro-batch.
        grad_accum: micro-batches per optimiser step.
        lr, warmup, weight_decay, max_grad_norm: optimiser (2e-5 §4.1; 500, 1e-2, 1.0 S3Diff). ``warmup``
            (``--warmup-steps``): steps of linear LR warm-up from 0 to ``lr``, then constant; the paper
            does not give one, 500 is S3Diff's ``lr_warmup_steps``; short runs want fewer.
        lambda_l2, lambda_lpips, lambda_gan: loss weights (2.0, 5.0, 0.5; §4.1); 0 disables a term.
        neg_prob: p_n of online negative-prompt learning (§7.2; S3Diff's 0.05).
        crop: training crop side in px (512, S3Diff).
        cfg_scale: the guidance scale recorded for inference (1.10, §7.2).
        mixed_precision: ``auto`` (what ``accelerate launch``/its config says, else ``no``), ``no``,
            ``fp16`` or ``bf16``.
        gradient_checkpointing: UNet activation checkpointing (saves memory).
        seed: seed of initialisation, sampling and augmentation.
        save_every, log_every: checkpoint / loss-log interval (steps).
        loader_workers: DataLoader worker processes.
        pretrained_losses: load LPIPS-VGG and DINO weights (False: random-init architectures, for
            plumbing tests only; the run's checkpoints record it).
        dino_overrides: architecture overrides of a random-init DINO backbone (tests).
        latent_tile, vae_tile: tiling recorded for inference (None: never tile).
    """

    base: str = "stabilityai/sd-turbo"
    fadex: str | None = None
    num_tokens: int = _RS.num_tokens
    mapnet_channels: int = _RS.mapnet_channels
    mapnet_heads: int = _RS.mapnet_heads
    vae_lora_rank: int = _RS.vae_lora_rank
    unet_lora_rank: int = _RS.unet_lora_rank
    lora_alpha: float = _RS.lora_alpha
    iterations: int = _RS.train_iterations
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = _RS.learning_rate
    warmup: int = 500
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    lambda_l2: float = _RS.lambda_l2
    lambda_lpips: float = _RS.lambda_lpips
    lambda_gan: float = _RS.lambda_gan
    neg_prob: float = _RS.neg_prompt_prob
    crop: int = 512
    cfg_scale: float = _RS.cfg_scale
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    seed: int = 0
    save_every: int = 1000
    log_every: int = 10
    loader_workers: int = 4
    pretrained_losses: bool = True
    dino_overrides: dict[str, Any] = field(default_factory=dict)
    positive_prompt: str = _RS.positive_prompt
    negative_prompt: str = _RS.negative_prompt

    #: Fields that may differ when resuming (everything else must match the saved run).
    RESUMABLE_CHANGES = ("iterations", "save_every", "log_every", "loader_workers", "grad_accum", "batch_size")

    def check(self) -> None:
        """Raise :class:`BadInputError` on inconsistent settings."""
        if self.num_tokens not in (0, 1, 5, 21):
            raise BadInputError(f"--tokens must be 0, 1, 5 or 21, got {self.num_tokens}")
        if self.num_tokens and not self.fadex:
            raise BadInputError("--fadex is required (a trained FaDeX) unless --tokens 0")
        for name in ("iterations", "batch_size", "grad_accum", "crop", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise BadInputError(f"--warmup-steps must be >= 0, got {self.warmup}")
        if self.crop % 8:
            raise BadInputError(f"--crop must be a multiple of 8, got {self.crop}")
        if not 0 <= self.neg_prob <= 1:
            raise BadInputError(f"--neg-prob must be in [0, 1], got {self.neg_prob}")
        if self.mixed_precision not in ("auto", "no", "fp16", "bf16"):
            raise BadInputError(f"--mixed-precision must be auto, no, fp16 or bf16, got {self.mixed_precision}")
        if min(self.vae_lora_rank, self.unet_lora_rank) < 0 or self.lr <= 0:
            raise BadInputError("LoRA ranks must be >= 0 and the learning rate > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_resolved_paths(self) -> RestorerTrainConfig:
        """A copy whose ``base`` and ``fadex``, when they are paths on this machine, are absolute (recorded
        in checkpoints, so a restore from another working directory finds them); Hub ids stay as given."""
        return replace(self, base=_absolute_if_local(self.base), fadex=_absolute_if_local(self.fadex))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RestorerTrainConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise BadInputError(f"unknown restorer training settings: {sorted(unknown)}")
        return cls(**d)


def _absolute_if_local(value: str | None) -> str | None:
    """``value`` as an absolute path when it names an existing file or folder, else unchanged (Hub id, None)."""
    if value and Path(value).exists():
        return str(Path(value).resolve())
    return value


# --------------------------------------------------------------------------------------------
# data


def _index_tar(tar: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """``key -> {field: (offset, size)}`` of a WebDataset tar (read once; members read by offset)."""
    by_key: dict[str, dict[str, tuple[int, int]]] = {}
    with tarfile.open(tar, "r:") as tf:
        for m in tf.getmembers():
            if m.isfile():
                key, _, fld = m.name.partition(".")
                by_key.setdefault(key, {})[fld] = (m.offset_data, m.size)
    return by_key


def _read(tar: str, where: tuple[int, int]) -> bytes:
    with open(tar, "rb") as f:
        f.seek(where[0])
        return f.read(where[1])


@dataclass
class _Scene:
    tar: str
    key: str
    hq: tuple[int, int]
    versions: dict[int, tuple[int, int]]
    meta: tuple[int, int] | None


class SceneDataset(torch.utils.data.Dataset):
    """Training scenes: (LQ crop, HQ crop, face pair) with one of the K LQ versions per visit.

    Args:
        roots: dataset folders written by ``inscene degrade``.
        pairs: face-pair dataset folders from ``inscene restorer prepare-pairs`` (optional).
        split: shard split folder to read (``train``).
        crop: crop side (px); smaller scenes are first resized so the short side is ``crop``.
        need_pairs: compute face pairs (False for the no-token ablation).
        face_size: aligned frame of the pair box (512, §3.1).
        min_face_px: smallest usable face box and pair side (16, §9.3; the trainer passes its FaDeX's
            :attr:`restorer.fadex.FadexConfig.min_face_px` when larger).
        seed: the randomness (version, crop) comes from seed, epoch and index.

    An item is a dict: ``lq`` and ``hq`` (3 x crop x crop in [-1, 1]), ``pair`` (6 x h x w in
    [0, 1], or None), ``key``, ``version``, ``pair_source`` (``prepared``, ``gt`` or ``none``).
    """

    def __init__(
        self,
        roots: Sequence[str | Path],
        pairs: Sequence[str | Path] = (),
        *,
        split: str | None = "train",
        crop: int = 512,
        need_pairs: bool = True,
        face_size: int = _RS.face_size,
        min_face_px: int = _RS.min_face_px,
        seed: int = 0,
    ) -> None:
        from inscene.shards import shard_paths

        self.crop, self.need_pairs, self.seed, self.epoch = int(crop), bool(need_pairs), int(seed), 0
        self.face_size, self.min_face_px = int(face_size), int(min_face_px)
        self.scenes: list[_Scene] = []
        for root in roots:
            root = Path(root)
            if not root.is_dir():
                raise BadInputError(f"not a dataset folder: {root}")
            tars = shard_paths(root, split) or shard_paths(root)
            for tar in tars:
                for key, members in sorted(_index_tar(tar).items()):
                    hq = next((members[f"{s}.{e}"] for s in ("hq", "gt") for e in _IMAGE_EXTS
                               if f"{s}.{e}" in members), None)
                    versions = {int(f[2:-4]): v for f, v in members.items()
                                if f.startswith("lq") and f.endswith(".png") and f[2:-4].isdigit()}
                    if hq is None or not versions:
                        continue
                    self.scenes.append(_Scene(str(tar), key, hq, versions, members.get("json")))
        if not self.scenes:
            raise BadInputError(
                f"no training scenes (hq.* with lq<k>.png) in {', '.join(map(str, roots))}: run `inscene degrade` first"
            )
        self.pairs: dict[tuple[str, int], tuple[str, dict[str, tuple[int, int]]]] = {}
        for root in pairs:
            self._index_pairs(Path(root), split)
        self.skipped: list[str] = []
        if self.need_pairs:
            keep = []
            prepared = {key for key, _ in self.pairs}
            for sc in self.scenes:
                if sc.key in prepared or self._usable_face(sc) is not None:
                    keep.append(sc)
                else:
                    self.skipped.append(sc.key)
            self.scenes = keep
            if not self.scenes:
                raise BadInputError(
                    f"none of the {len(self.skipped)} training scenes has a face pair (a prepared pair, or a "
                    f"recorded face of at least {self.min_face_px} px): run `inscene restorer prepare-pairs` or "
                    "record faces, or train with --tokens 0"
                )

    def _index_pairs(self, root: Path, split: str | None) -> None:
        import pandas as pd

        from inscene.shards import shard_paths

        if not root.is_dir():
            raise BadInputError(f"not a pair dataset folder: {root}")
        for tar in shard_paths(root, split) or shard_paths(root):
            members = _index_tar(tar)
            manifest = tar.with_suffix(".parquet")
            if not manifest.is_file():
                continue
            df = pd.read_parquet(manifest, columns=["__key__", "scene_key", "version", "kind"])
            for key, scene, version, kind in zip(df["__key__"], df["scene_key"], df["version"], df["kind"],
                                                  strict=True):
                m = members.get(key, {})
                if kind == "own" and {"hq.png", "lq.png"} <= set(m):
                    self.pairs[(str(scene), int(version))] = (str(tar), m)

    def __len__(self) -> int:
        return len(self.scenes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _usable_face(self, sc: _Scene) -> Any:
        """The scene's largest recorded face when it is usable (>= ``min_face_px``), else None."""
        from inscene.schema import Face

        if sc.meta is None:
            return None
        meta = json.loads(_read(sc.tar, sc.meta))
        faces = [Face.model_validate(f) for f in json.loads(meta.get("faces") or "[]")]
        if not faces:
            return None
        face = max(faces, key=lambda f: f.area)
        x1, y1, x2, y2 = face.box
        return face if min(x2 - x1, y2 - y1) >= self.min_face_px else None

    def _gt_pair(self, face: Any, hq: np.ndarray, lq: np.ndarray) -> tuple[np.ndarray, str]:
        """(clean, degraded) crops of the face's pair box; the centre square if that box is unusable."""
        from inscene.faces.align import estimate_alignment
        from restorer.stage1 import pair_box

        box = pair_box(estimate_alignment(face, self.face_size), hq.shape[:2]) if face is not None else None
        source = "gt"
        if box is None or min(box[2] - box[0], box[3] - box[1]) < self.min_face_px:
            h, w = hq.shape[:2]
            side = min(h, w, 256)
            y0, x0 = (h - side) // 2, (w - side) // 2
            box, source = (x0, y0, x0 + side, y0 + side), "center"
        x0, y0, x1, y1 = box
        return np.concatenate([hq[y0:y1, x0:x1], lq[y0:y1, x0:x1]], axis=2), source

    def __getitem__(self, index: int) -> dict[str, Any]:
        from inscene.imageio import decode_image
        from restorer.model import resize_image

        sc = self.scenes[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        k = int(rng.choice(sorted(sc.versions)))
        hq = decode_image(_read(sc.tar, sc.hq))
        lq = decode_image(_read(sc.tar, sc.versions[k]))
        if lq.shape != hq.shape:
            lq = resize_image(lq, hq.shape[:2])
        pair, source = None, "none"
        if self.need_pairs:
            prepared = self.pairs.get((sc.key, k))
            if prepared is not None:
                tar, m = prepared
                x_hq, x_lq = decode_image(_read(tar, m["hq.png"])), decode_image(_read(tar, m["lq.png"]))
                if x_hq.shape == x_lq.shape and min(x_hq.shape[:2]) >= self.min_face_px:
                    pair, source = np.concatenate([x_hq, x_lq], axis=2), "prepared"
            if pair is None:
                pair, source = self._gt_pair(self._usable_face(sc), hq, lq)
        h, w = hq.shape[:2]
        c = self.crop
        if min(h, w) < c:
            s = c / min(h, w)
            size = (max(c, round(h * s)), max(c, round(w * s)))
            hq, lq = resize_image(hq, size), resize_image(lq, size)
            h, w = size
        y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a[y:y + c, x:x + c])).permute(2, 0, 1).float() / 127.5 - 1

        out: dict[str, Any] = {"lq": tensor(lq), "hq": tensor(hq), "key": sc.key, "version": k, "pair_source": source}
        if pair is not None:
            out["pair"] = torch.from_numpy(np.ascontiguousarray(pair)).permute(2, 0, 1).float() / 255
        else:
            out["pair"] = None
        return out


def collate(items: list[dict[str, Any]], need_pairs: bool = True) -> dict[str, Any]:
    """Stack the scenes; face pairs (of different sizes) stay a list of ``1 x 6 x h x w`` tensors."""
    if need_pairs and any(it["pair"] is None for it in items):
        raise BadInputError("a training scene has no face pair (the dataset should have left it out)")
    return {
        "lq": torch.stack([it["lq"] for it in items]),
        "hq": torch.stack([it["hq"] for it in items]),
        "pairs": [it["pair"][None] for it in items] if need_pairs else [],
        "sources": [it["pair_source"] for it in items],
    }


class _Collate:
    def __init__(self, need_pairs: bool) -> None:
        self.need_pairs = need_pairs

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return collate(items, self.need_pairs)


# --------------------------------------------------------------------------------------------
# model


class _Generator(nn.Module):
    """The trainable restorer as one module (what DDP wraps): tokens from pairs, one step."""

    def __init__(self, f2s: nn.Module) -> None:
        super().__init__()
        self.f2s = f2s

    def forward(self, lq: torch.Tensor, pairs: list[torch.Tensor], negative: torch.Tensor) -> torch.Tensor:
        tokens = self.f2s.degradation_tokens(pairs) if pairs else None
        return self.f2s.onestep(lq, tokens, negative=negative, sample_posterior=True)


def build_trainer_model(cfg: RestorerTrainConfig, device: str | torch.device = "cpu") -> Any:
    """The :class:`restorer.model.Face2Scene` to train (base + fresh LoRA + MapNet + frozen FaDeX)."""
    from restorer.mapnet import MapNet
    from restorer.model import Face2Scene, resolve_base
    from restorer.onestep import OneStepSD

    base = resolve_base(None if cfg.base == "stabilityai/sd-turbo" else cfg.base, cfg.base)
    onestep = OneStepSD.from_pretrained(
        base, positive_prompt=cfg.positive_prompt, negative_prompt=cfg.negative_prompt, device=device,
        vae_lora_rank=cfg.vae_lora_rank, unet_lora_rank=cfg.unet_lora_rank, lora_alpha=cfg.lora_alpha,
        timestep=_RS.timestep,
    )
    mapnet = fadex = None
    if cfg.num_tokens:
        from restorer.fadex import FaDeX

        assert cfg.fadex is not None
        fadex = FaDeX.from_pretrained(cfg.fadex)
        mapnet = MapNet(
            in_channels=fadex.config.channels, channels=cfg.mapnet_channels, heads=cfg.mapnet_heads,
            token_dim=onestep.cross_attention_dim, num_tokens=cfg.num_tokens,
        )
    model = Face2Scene(onestep, mapnet, fadex, None, cfg_scale=cfg.cfg_scale, base=cfg.base,
                       prompts=(cfg.positive_prompt, cfg.negative_prompt))
    return model.to(device)


def min_face_px(cfg: RestorerTrainConfig) -> int:
    """Smallest usable face pair for this run: 16 px (§9.3), or what its FaDeX needs for MapNet's
    8x8 Z_face (8 x its total stride) when larger."""
    if not cfg.num_tokens or not cfg.fadex:
        return _RS.min_face_px
    from restorer.fadex import FadexConfig

    return max(_RS.min_face_px, FadexConfig.from_pretrained(cfg.fadex).min_face_px)


def trainable_parameters(model: Any) -> list[nn.Parameter]:
    """LoRA + conv_in of SD-Turbo and all of MapNet (FaDeX and the base stay frozen)."""
    params = [p for _, p in model.onestep.named_trainable_parameters()]
    if model.mapnet is not None:
        params += list(model.mapnet.parameters())
    return params


# --------------------------------------------------------------------------------------------
# training


@dataclass
class TrainResult:
    """What a run produced."""

    checkpoint: Path
    steps: int
    last_losses: dict[str, float]
    skipped: int


def _save_state(folder: Path, step: int, disc: nn.Module | None, optimizers: dict[str, Any],
                schedulers: dict[str, Any], cfg: RestorerTrainConfig) -> None:
    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    if disc is not None:
        heads = {k: v.detach().cpu().contiguous() for k, v in disc.state_dict().items()
                 if not k.startswith("backbone.")}
        save_file(heads, str(tmp / "discriminator_heads.safetensors"))
    buf = io.BytesIO()
    torch.save({"optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in schedulers.items()}}, buf)
    (tmp / "optimizers.pt").write_bytes(buf.getvalue())
    save_file({"torch_rng": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "config": cfg.to_dict()}, indent=2))
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    tmp.replace(folder)


class RestorerTrainer:
    """One training run: set-up (model, losses, optimisers, data, resume), steps, checkpoints.

    Args:
        data: degraded training datasets (``inscene degrade`` output).
        out: run folder.
        cfg: settings.
        pairs: face-pair datasets (``inscene restorer prepare-pairs`` output), optional.
        split: shard split folder to read.
        resume: continue from ``out/state`` when present (settings must match, except
            :attr:`RestorerTrainConfig.RESUMABLE_CHANGES`).
        cpu: force CPU.
        console: rich console for progress and messages (default: stderr).
    """

    def __init__(
        self,
        data: Sequence[str | Path],
        out: str | Path,
        cfg: RestorerTrainConfig,
        *,
        pairs: Sequence[str | Path] = (),
        split: str | None = "train",
        resume: bool = True,
        cpu: bool = False,
        console: Any = None,
    ) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed
        from diffusers.optimization import get_scheduler
        from rich.console import Console

        from restorer.losses import DinoDiscriminator, LPIPSLoss, create_dino_backbone

        cfg.check()
        cfg = cfg.with_resolved_paths()
        self.cfg = cfg
        self.console = console or Console(stderr=True)
        self.out = Path(out)
        self.state_dir = self.out / "state"
        self.step_count = self._resume_step() if resume else 0
        dataset = SceneDataset(data, pairs, split=split, crop=cfg.crop, need_pairs=cfg.num_tokens > 0,
                               min_face_px=min_face_px(cfg), seed=cfg.seed)
        ddp = DistributedDataParallelKwargs(find_unused_parameters=cfg.num_tokens == 0)
        precision = None if cfg.mixed_precision == "auto" else cfg.mixed_precision
        acc = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=precision,
                          cpu=cpu or not torch.cuda.is_available(), kwargs_handlers=[ddp])
        self.accelerator = acc
        # Per-process seeds (sampling noise, negative prompts); DDP broadcasts rank 0's initial weights.
        set_seed(cfg.seed, device_specific=True)
        model = build_trainer_model(cfg, acc.device)
        model.onestep.set_trainable(True)
        if cfg.gradient_checkpointing:
            model.onestep.unet.enable_gradient_checkpointing()
        start = self.step_count
        if start:
            self._load_weights(model, start)
        self.model = model
        self.params = trainable_parameters(model)
        opt_g = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched_g = get_scheduler("constant_with_warmup", optimizer=opt_g, num_warmup_steps=cfg.warmup)
        self.lpips = LPIPSLoss(pretrained=cfg.pretrained_losses).to(acc.device) if cfg.lambda_lpips > 0 else None
        disc = opt_d = sched_d = None
        if cfg.lambda_gan > 0:
            backbone = create_dino_backbone(pretrained=cfg.pretrained_losses, **cfg.dino_overrides)
            disc = DinoDiscriminator(backbone).to(acc.device)
            opt_d = torch.optim.AdamW(disc.head_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            sched_d = get_scheduler("constant_with_warmup", optimizer=opt_d, num_warmup_steps=cfg.warmup)
        if start:
            self._load_state(opt_g, sched_g, disc, opt_d, sched_d)
        self.dataset = dataset
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=len(dataset) >= cfg.batch_size,
            collate_fn=_Collate(cfg.num_tokens > 0), num_workers=cfg.loader_workers,
            generator=torch.Generator().manual_seed(cfg.seed + start),
        )
        gen = _Generator(model)
        if disc is not None:
            gen, disc, opt_g, opt_d, loader, sched_g, sched_d = acc.prepare(
                gen, disc, opt_g, opt_d, loader, sched_g, sched_d)
        else:
            gen, opt_g, loader, sched_g = acc.prepare(gen, opt_g, loader, sched_g)
        self.gen, self.disc, self.loader = gen, disc, loader
        self.opt_g, self.opt_d, self.sched_g, self.sched_d = opt_g, opt_d, sched_g, sched_d
        self.raw_disc = acc.unwrap_model(disc) if disc is not None else None

    # -- resume ---------------------------------------------------------------------------------

    def _resume_step(self) -> int:
        file = self.state_dir / "trainer_state.json"
        if not file.is_file():
            return 0
        state = json.loads(file.read_text())
        now = self.cfg.to_dict()
        old = RestorerTrainConfig.from_dict(state["config"]).with_resolved_paths().to_dict()
        diff = sorted(k for k in now if k not in self.cfg.RESUMABLE_CHANGES and old.get(k) != now[k])
        if diff:
            raise BadInputError(f"cannot resume {self.out}: settings differ from the saved run ({', '.join(diff)}); "
                                "use another --out or --no-resume")
        return int(state["step"])

    def _load_weights(self, model: Any, step: int) -> None:
        from restorer.model import load_checkpoint

        state, _ = load_checkpoint(self.out / "checkpoints" / f"step-{step:07d}.safetensors")
        model.onestep.load_trainable_state_dict({k[8:]: v for k, v in state.items() if k.startswith("onestep.")})
        if model.mapnet is not None:
            model.mapnet.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("mapnet.")})

    def _load_state(self, opt_g: Any, sched_g: Any, disc: Any, opt_d: Any, sched_d: Any) -> None:
        from safetensors.torch import load_file

        blob = torch.load(io.BytesIO((self.state_dir / "optimizers.pt").read_bytes()), weights_only=True)
        opt_g.load_state_dict(blob["optimizers"]["g"])
        sched_g.load_state_dict(blob["schedulers"]["g"])
        if disc is not None:
            disc.load_state_dict(load_file(str(self.state_dir / "discriminator_heads.safetensors")), strict=False)
            opt_d.load_state_dict(blob["optimizers"]["d"])
            sched_d.load_state_dict(blob["schedulers"]["d"])
        torch.set_rng_state(load_file(str(self.state_dir / "rng.safetensors"))["torch_rng"])

    # -- one micro-batch ------------------------------------------------------------------------

    def train_batch(self, batch: dict[str, Any]) -> dict[str, float]:
        """Forward/backward of one micro-batch and, when accumulation is complete, the optimiser
        steps. Returns the batch's losses."""
        cfg, acc, disc, raw = self.cfg, self.accelerator, self.disc, self.raw_disc
        lq, hq = batch["lq"].to(acc.device), batch["hq"].to(acc.device)
        b = lq.shape[0]
        with acc.accumulate(*(m for m in (self.gen, disc) if m is not None)):
            negative = torch.rand(b, device=lq.device) < cfg.neg_prob
            target = torch.where(negative[:, None, None, None], lq, hq)
            with acc.autocast():
                pred = self.gen(lq, batch["pairs"], negative)
            l2 = F.mse_loss(pred.float(), target.float())
            loss = cfg.lambda_l2 * l2
            parts = {"l2": float(l2.detach())}
            if self.lpips is not None:
                lp = self.lpips(pred, target)
                loss = loss + cfg.lambda_lpips * lp
                parts["lpips"] = float(lp.detach())
            # The adversarial terms cover positive-prompt samples only (weights), but every process
            # always runs the same forwards: DDP needs identical collectives on every rank.
            positive = (~negative).float()
            if disc is not None:
                lg = raw.loss(self._frozen_disc(pred), real=True, weight=positive)
                loss = loss + cfg.lambda_gan * lg
                parts["gan_g"] = float(lg.detach())
            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(self.params, cfg.max_grad_norm)
            self.opt_g.step()
            self.sched_g.step()
            self.opt_g.zero_grad(set_to_none=True)
            if disc is not None:
                # No zero_grad here: the heads' gradients accumulate over the micro-batches like the
                # generator's (the generator pass never wrote into them) and are cleared after the step.
                logits = disc(torch.cat([hq, pred.detach()]))
                n = hq.shape[0]
                ld = raw.loss([x[:n] for x in logits], True) + raw.loss([x[n:] for x in logits], False,
                                                                        weight=positive)
                acc.backward(cfg.lambda_gan * ld)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(raw.head_parameters(), cfg.max_grad_norm)
                self.opt_d.step()
                self.sched_d.step()
                self.opt_d.zero_grad(set_to_none=True)
                parts["gan_d"] = float(ld.detach())
            parts["loss"] = float(loss.detach())
        return parts

    def _frozen_disc(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Discriminator logits for the generator's loss, with the heads frozen: the backward reaches
        the generated images but never writes into the heads' gradients, which hold the
        discriminator loss accumulated over the micro-batches of a step. Runs the unwrapped module
        (no DDP gradient sync for parameters that get no gradient)."""
        heads = self.raw_disc.head_parameters()
        flags = [p.requires_grad for p in heads]
        for p in heads:
            p.requires_grad_(False)
        try:
            return self.raw_disc(images)
        finally:
            for p, flag in zip(heads, flags, strict=True):
                p.requires_grad_(flag)

    # -- checkpoints ----------------------------------------------------------------------------

    def save(self) -> Path | None:
        """Checkpoint + resumable state at the current step (main process); returns the checkpoint."""
        from restorer.model import CHECKPOINT_NAME, save_checkpoint

        acc = self.accelerator
        acc.wait_for_everyone()
        if not acc.is_main_process:
            return None
        step = self.step_count
        path = self.out / "checkpoints" / f"step-{step:07d}.safetensors"
        extra = {"train": {"step": step, "pretrained_losses": self.cfg.pretrained_losses}}
        save_checkpoint(acc.unwrap_model(self.gen).f2s, path, extra=extra)
        latest = self.out / CHECKPOINT_NAME
        tmp = latest.with_name(latest.name + ".tmp")
        tmp.write_bytes(path.read_bytes())
        tmp.replace(latest)
        opts = {"g": self.opt_g, **({"d": self.opt_d} if self.disc is not None else {})}
        scheds = {"g": self.sched_g, **({"d": self.sched_d} if self.disc is not None else {})}
        _save_state(self.state_dir, step, self.raw_disc, opts, scheds, self.cfg)
        return path

    # -- the loop -------------------------------------------------------------------------------

    def fit(self, max_steps: int | None = None) -> TrainResult:
        """Train up to ``cfg.iterations`` (or ``max_steps`` more steps), checkpointing as configured."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        cfg, acc, con = self.cfg, self.accelerator, self.console
        main = acc.is_main_process
        start = self.step_count
        stop_at = cfg.iterations if max_steps is None else min(cfg.iterations, start + max_steps)
        if start >= cfg.iterations:
            from restorer.model import CHECKPOINT_NAME

            done = self.out / "checkpoints" / f"step-{start:07d}.safetensors"
            done = done if done.is_file() else self.out / CHECKPOINT_NAME
            if main:
                con.print(f"restorer: already finished at step {start}: {done}", highlight=False)
            return TrainResult(checkpoint=done, steps=start, last_losses={}, skipped=len(self.dataset.skipped))
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
            eff = effective_batch(cfg, acc.num_processes)
            skipped = self.dataset.skipped
            con.print(f"training the restorer: {len(self.dataset)} scenes ({len(skipped)} left out: no usable face"
                      f"{', e.g. ' + skipped[0] if skipped else ''}), {len(self.dataset.pairs)} prepared "
                      f"pairs, steps {start}->{stop_at}, effective batch {eff} on {acc.device} "
                      f"({acc.num_processes} process(es), mixed precision {acc.mixed_precision})", highlight=False)
        if len(self.loader) == 0:
            raise BadInputError("the training loader is empty")
        log = (self.out / "loss.jsonl").open("a") if main else None
        losses: dict[str, float] = {}
        last: Path | None = None
        epoch = 0
        t0 = time.perf_counter()
        bar = Progress(TextColumn("train restorer"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       TextColumn("{task.fields[info]}"), console=con, disable=not main or not con.is_terminal)
        task = bar.add_task("train", total=cfg.iterations, completed=start, info="")
        try:
            with bar:
                while self.step_count < stop_at:
                    self.dataset.set_epoch(start + epoch)
                    for batch in self.loader:
                        parts = self.train_batch(batch)
                        if not acc.sync_gradients:
                            continue
                        self.step_count += 1
                        step = self.step_count
                        losses = parts
                        bar.update(task, completed=step, info=" ".join(f"{k}={v:.4f}" for k, v in parts.items()))
                        if log is not None and (step % cfg.log_every == 0 or step == stop_at):
                            rec = {"step": step, **{k: round(v, 6) for k, v in parts.items()},
                                   "lr": self.sched_g.get_last_lr()[0],
                                   "time": round(time.perf_counter() - t0, 3)}
                            log.write(json.dumps(rec) + "\n")
                            log.flush()
                        if step % cfg.save_every == 0 or step == stop_at:
                            last = self.save() or last
                        if step >= stop_at:
                            break
                    epoch += 1
        finally:
            if log is not None:
                log.close()
        if main:
            con.print(f"restorer: {self.step_count} steps; last {', '.join(f'{k} {v:.4f}' for k, v in losses.items())}"
                      f"; checkpoint {last}", highlight=False)
        from restorer.model import CHECKPOINT_NAME

        return TrainResult(checkpoint=last or self.out / CHECKPOINT_NAME, steps=self.step_count,
                           last_losses=losses, skipped=len(self.dataset.skipped))


def run_training(
    data: Sequence[str | Path],
    out: str | Path,
    cfg: RestorerTrainConfig,
    *,
    pairs: Sequence[str | Path] = (),
    split: str | None = "train",
    resume: bool = True,
    cpu: bool = False,
    console: Any = None,
    max_steps: int | None = None,
) -> TrainResult:
    """Train the restorer (see the module docstring and :class:`RestorerTrainer`).

    Args:
        data: degraded training datasets (``inscene degrade`` output).
        out: run folder.
        cfg: settings.
        pairs: face-pair datasets (``inscene restorer prepare-pairs`` output), optional.
        split: shard split folder to read.
        resume: continue from ``out/state`` when present.
        cpu: force CPU.
        console: rich console.
        max_steps: stop after this many steps in this call (time-boxed jobs; resume continues).

    Returns:
        The last checkpoint and the final losses.
    """
    trainer = RestorerTrainer(data, out, cfg, pairs=pairs, split=split, resume=resume, cpu=cpu, console=console)
    return trainer.fit(max_steps)


def effective_batch(cfg: RestorerTrainConfig, processes: int) -> int:
    """``batch_size x grad_accum x processes`` (paper: 64)."""
    return cfg.batch_size * cfg.grad_accum * processes
