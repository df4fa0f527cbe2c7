"""``inscene train fadex``: supervised-contrastive MoCo training of FaDeX (Face2Scene §3.2 Eq. 1, §4.1, §7.1).

Data: face-pair shards from ``inscene restorer prepare-pairs``; every pair carries the label of the
operator G that made it. A batch holds ``batch_size / views`` labels with ``views`` pairs each (pairs
made with the same G on different images: the positives of Eq. 1), each pair randomly cropped to
``crop`` px (the same window in x_HQ and x_LQ; smaller pairs are reflect-padded). With probability
``gt_prob`` a pair's x_HQ is replaced by its ground-truth crop (the paper's GT pairs, §3.2).

Objective (§7.1, Figure 7): the principal encoder embeds the batch as queries q; a momentum encoder
(EMA of the principal one, never optimised) embeds the same batch as keys, which are then pushed into
a FIFO queue of past keys with their labels. For query i, the candidates are the batch keys other than
its own input and the queue; P(i) are the candidates with i's label, and Eq. 1 is

    L = Σ_i Σ_{p∈P(i)} −log( exp(<q_i, k_p>/τ) / Σ_{a≠i} exp(<q_i, k_a>/τ) ),

averaged over the (i, p) terms (a constant rescaling of Eq. 1's sum, so the learning rate does not
depend on the batch composition). With an empty queue and keys = queries it is exactly Eq. 1.

Optimiser (paper: lr 3e-2, batch 20, 200 epochs, §4.1; the optimiser is not named): the default is
SGD with momentum 0.9, weight decay 1e-4 and a cosine schedule, MoCo's recipe, whose learning rate is
the paper's 0.03; ``adamw`` is the alternative. Measured on the CPU recipe's small model and data
(:mod:`restorer.recipes.fadex_cpu`): SGD at 0.03 gave codes that ignored x_LQ on held-out images
(same-image cosine 0.99-1.0 after 1600 steps), AdamW at 1e-3 learned (Figure-3 gap 0.28 after 2400
steps), so the recipe uses AdamW; the SGD default is the paper's setting for its scale, unverified
here. τ = 0.1 (SupCon's region; MoCo v2 uses 0.2); key-encoder momentum 0.999 (MoCo; the short
CPU recipe uses 0.99).

Runs with ``accelerate`` (CPU, one or many GPUs: keys are gathered across processes before they
enter the queue). Checkpoints (``checkpoints/epoch-NNNN`` and, when stopped by ``max_minutes``,
``checkpoints/step-NNNNNNN``) hold the encoder as safetensors + JSON config, the momentum encoder and
queue as safetensors, the optimiser state (``torch.load(weights_only=True)``) and a JSON trainer
state; a rerun resumes from the newest one. Every step appends a line to ``loss.jsonl``. The final
encoder is ``OUT/fadex.safetensors`` + ``OUT/fadex_config.json`` (:meth:`FaDeX.from_pretrained`).
"""

from __future__ import annotations

import copy
import io
import json
import math
import shutil
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from inscene.errors import BadInputError
from restorer.fadex import FaDeX, FadexConfig

__all__ = [
    "FadexTrainConfig",
    "LabelQueue",
    "PairDataset",
    "LabelBatchSampler",
    "TrainResult",
    "supcon_loss",
    "contrastive_step",
    "momentum_update",
    "run_training",
]


# ---- Eq. 1 ------------------------------------------------------------------------------------------


def supcon_loss(
    q: torch.Tensor,
    q_labels: torch.Tensor,
    k: torch.Tensor,
    k_labels: torch.Tensor,
    temperature: float,
    *,
    self_mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> tuple[torch.Tensor, dict[str, float]]:
    """The supervised-contrastive loss of Eq. 1 over queries and candidate keys.

    Args:
        q: (B, d) unit-norm queries.
        q_labels: (B,) int64 degradation labels.
        k: (N, d) unit-norm candidates (batch keys, then the queue).
        k_labels: (N,) their labels.
        temperature: τ.
        self_mask: (B, N) True where candidate a is query i itself (excluded from P(i) and from the
            denominator). None: nothing excluded.
        reduction: ``sum`` (Eq. 1 as written) or ``mean`` over the (i, p) terms.

    Returns:
        The loss and a few diagnostics (mean positive / negative similarity, number of terms).
    """
    if reduction not in ("sum", "mean"):
        raise BadInputError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    sims = q @ k.T
    logits = sims / temperature
    if self_mask is None:
        self_mask = torch.zeros_like(logits, dtype=torch.bool)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = (q_labels[:, None] == k_labels[None, :]) & ~self_mask
    n = int(pos.sum())
    if n == 0:
        loss = q.sum() * 0.0
    else:
        total = -log_prob[pos].sum()
        loss = total if reduction == "sum" else total / n
    with torch.no_grad():
        neg = ~pos & ~self_mask
        stats = {
            "pos_sim": float(sims[pos].mean()) if n else float("nan"),
            "neg_sim": float(sims[neg].mean()) if bool(neg.any()) else float("nan"),
            "terms": float(n),
        }
    return loss, stats


class LabelQueue(nn.Module):
    """FIFO queue of momentum keys with their labels (MoCo's negatives, §7.1).

    Args:
        size: capacity (number of keys kept).
        dim: key dimension.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 0:
            raise BadInputError(f"queue size must be >= 0, got {size}")
        self.size = int(size)
        self.register_buffer("keys", torch.zeros(self.size, dim))
        self.register_buffer("labels", torch.full((self.size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        """Push keys (oldest entries are overwritten first)."""
        if self.size == 0:
            return
        keys, labels = keys.detach()[-self.size:], labels.detach()[-self.size:]
        n, p = keys.shape[0], int(self.ptr)
        idx = (torch.arange(n, device=self.keys.device) + p) % self.size
        self.keys[idx] = keys.to(self.keys)
        self.labels[idx] = labels.to(self.labels)
        self.ptr.fill_((p + n) % self.size)
        self.count.fill_(min(self.size, int(self.count) + n))

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored keys and labels, oldest first."""
        c, p = int(self.count), int(self.ptr)
        if c < self.size:
            return self.keys[:c], self.labels[:c]
        order = (torch.arange(self.size, device=self.keys.device) + p) % self.size
        return self.keys[order], self.labels[order]


@torch.no_grad()
def momentum_update(key_model: nn.Module, model: nn.Module, momentum: float) -> None:
    """θ_k ← m θ_k + (1 − m) θ_q for every parameter (the key encoder's BN statistics are its own)."""
    for pk, pq in zip(key_model.parameters(), model.parameters(), strict=True):
        pk.mul_(momentum).add_(pq.detach(), alpha=1.0 - momentum)


def contrastive_step(
    model: nn.Module,
    key_model: nn.Module,
    queue: LabelQueue,
    x: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    *,
    gather: Any = None,
    process_index: int = 0,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor, torch.Tensor]:
    """One MoCo step's loss (§7.1): queries from ``model``, keys from ``key_model`` (no gradient),
    candidates = this step's keys (gathered over processes) + the queue, Eq. 1 (mean).

    Returns:
        The loss, diagnostics, and the gathered keys and labels (to enqueue after the update).
    """
    gather = gather or (lambda t: t)
    q = model(x)
    with torch.no_grad():
        k = key_model(x)
    k_all, lab_all = gather(k), gather(labels)
    qk, ql = queue.contents()
    cand = torch.cat([k_all, qk.to(k_all)])
    cand_labels = torch.cat([lab_all, ql.to(lab_all)])
    b = x.shape[0]
    self_mask = torch.zeros(b, cand.shape[0], dtype=torch.bool, device=x.device)
    self_mask[torch.arange(b), process_index * b + torch.arange(b)] = True
    loss, stats = supcon_loss(q, labels, cand, cand_labels, temperature, self_mask=self_mask)
    return loss, stats, k_all, lab_all


# ---- data -----------------------------------------------------------------------------------------


def label_id(label: str) -> int:
    """A pair's hex label as an int64 (its first 15 hex digits)."""
    return int(label[:15], 16)


@dataclass
class _PairRef:
    tar: str
    members: dict[str, tuple[int, int]]
    label: int
    key: str
    operator: str = ""


class PairDataset(torch.utils.data.Dataset):
    """Pairs from one or more pair datasets, read lazily from the shards (member offsets indexed).

    Item: ``(pair (6, crop, crop) float in [0, 1], label int64)``; random crop, GT swap with
    ``gt_prob``; the randomness comes from ``seed``, the epoch and the index, so runs repeat.
    """

    def __init__(self, roots: Sequence[str | Path], *, crop: int, gt_prob: float = 0.5, seed: int = 0,
                 split: str | None = None) -> None:
        from inscene.shards import shard_paths

        self.crop, self.gt_prob, self.seed, self.epoch = int(crop), float(gt_prob), int(seed), 0
        if self.crop < 16:
            raise BadInputError(f"crop must be >= 16 px (§9.3), got {crop}")
        self.refs: list[_PairRef] = []
        for root in roots:
            root = Path(root)
            if not root.is_dir():
                raise BadInputError(f"not a pair dataset folder: {root}")
            for tar in shard_paths(root, split):
                self.refs.extend(self._index(tar))
        if not self.refs:
            raise BadInputError(f"no face pairs in {', '.join(map(str, roots))}: run `inscene restorer prepare-pairs`")
        self.labels = np.array([r.label for r in self.refs], dtype=np.int64)
        self.operators = [r.operator for r in self.refs]

    @staticmethod
    def _index(tar: Path) -> list[_PairRef]:
        by_key: dict[str, dict[str, tuple[int, int]]] = {}
        with tarfile.open(tar, "r:") as tf:
            for m in tf.getmembers():
                if m.isfile():
                    key, _, fld = m.name.partition(".")
                    by_key.setdefault(key, {})[fld] = (m.offset_data, m.size)
        meta: dict[str, dict[str, Any]] = {}
        manifest = tar.with_suffix(".parquet")
        if manifest.is_file():
            import pandas as pd

            df = pd.read_parquet(manifest)
            cols = [c for c in ("label", "operator_key") if c in df.columns]
            meta = {k: dict(zip(cols, row, strict=True)) for k, *row in df[["__key__", *cols]].itertuples(index=False)}
        out = []
        for key, members in sorted(by_key.items()):
            if not {"hq.png", "lq.png"} <= set(members):
                continue
            m = meta.get(key)
            if m is None and "json" in members:
                m = json.loads(_read(str(tar), members["json"]))
            label = (m or {}).get("label")
            if not label:
                continue
            out.append(_PairRef(str(tar), members, label_id(str(label)), key, str(m.get("operator_key") or "")))
        return out

    def __len__(self) -> int:
        return len(self.refs)

    def start_epoch(self, epoch: int) -> None:
        """Change the random crops / GT swaps (call before each epoch). Not named ``set_epoch``, so
        accelerate's prepared loader, which calls that with its own counter, leaves it alone."""
        self.epoch = int(epoch)

    def load(self, i: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The decoded (x_hq, x_lq, x_gt or None) of pair ``i``."""
        from inscene.imageio import decode_image

        r = self.refs[i]
        hq = decode_image(_read(r.tar, r.members["hq.png"]))
        lq = decode_image(_read(r.tar, r.members["lq.png"]))
        gt = decode_image(_read(r.tar, r.members["gt.png"])) if "gt.png" in r.members else None
        return hq, lq, gt

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        i, draw = index if isinstance(index, tuple) else (index, 0)
        rng = np.random.default_rng([self.seed, self.epoch, int(i), int(draw)])
        hq, lq, gt = self.load(int(i))
        if gt is not None and gt.shape == hq.shape and rng.uniform() < self.gt_prob:
            hq = gt
        pair = random_crop(np.concatenate([hq, lq], axis=2), self.crop, rng)
        t = torch.from_numpy(np.ascontiguousarray(pair)).permute(2, 0, 1).float().div_(255.0)
        return t, int(self.labels[i])


def _read(tar: str, where: tuple[int, int]) -> bytes:
    off, size = where
    with open(tar, "rb") as fh:
        fh.seek(off)
        data = fh.read(size)
    if len(data) != size:
        raise BadInputError(f"shard {tar} is truncated")
    return data


def random_crop(arr: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
    """A ``crop`` x ``crop`` window (reflect-padded first when the pair is smaller)."""
    import cv2

    h, w = arr.shape[:2]
    if h < crop or w < crop:
        ph, pw = max(0, crop - h), max(0, crop - w)
        parts = [cv2.copyMakeBorder(arr[:, :, c : c + 3], ph // 2, ph - ph // 2, pw // 2, pw - pw // 2,
                                    cv2.BORDER_REFLECT_101) for c in range(0, arr.shape[2], 3)]
        arr = np.concatenate(parts, axis=2)
        h, w = arr.shape[:2]
    y = int(rng.integers(0, h - crop + 1))
    x = int(rng.integers(0, w - crop + 1))
    return arr[y : y + crop, x : x + crop]


class LabelBatchSampler(torch.utils.data.Sampler):
    """Batches of ``batch_size // views`` labels x ``views`` pairs (positives for Eq. 1).

    Only labels with at least two pairs are drawn (a label seen once has no positive); a label with
    fewer than ``views`` pairs repeats some (their random crops differ). One epoch visits every such
    label once. Yields lists of ``(index, draw)``; ``skip`` drops the first batches (resuming).

    With ``operators`` (each pair's ``operator_key``: the clean image whose LQ version defined its
    operator), labels are batched by operator image: the K operators of one image were all replayed
    on the same partner images, so a batch then holds a grid of images x operators, i.e. the same
    content under other operators as negatives, which is what makes the code content-invariant
    (and what Figure 3 measures). Without it, labels are drawn at random.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, views: int, seed: int = 0, drop_last: bool = True,
                 operators: Sequence[str] | None = None) -> None:
        if views < 2:
            raise BadInputError(f"views must be >= 2 (positives need two pairs of one operator), got {views}")
        if batch_size < views or batch_size % views:
            raise BadInputError(f"batch size {batch_size} must be a multiple of views {views}")
        self.batch_size, self.views, self.seed, self.epoch, self.skip = batch_size, views, seed, 0, 0
        groups: dict[int, list[int]] = {}
        for i, lab in enumerate(labels.tolist()):
            groups.setdefault(lab, []).append(i)
        self.groups = [g for _, g in sorted(groups.items()) if len(g) >= 2]
        if not self.groups:
            raise BadInputError("no operator has two pairs: make pairs with --share >= 1 (same G on other images)")
        # labels of one operator image, together (when known)
        by_op: dict[str, list[int]] = {}
        for gi, members in enumerate(self.groups):
            op = operators[members[0]] if operators is not None else ""
            by_op.setdefault(op or f"#{gi}", []).append(gi)
        self.blocks = [b for _, b in sorted(by_op.items())]
        self.per_batch = batch_size // views
        self.drop_last = drop_last

    def start_epoch(self, epoch: int, skip: int = 0) -> None:
        """Reshuffle for ``epoch``; skip its first ``skip`` batches (not ``set_epoch``: see
        :meth:`PairDataset.start_epoch`)."""
        self.epoch, self.skip = int(epoch), int(skip)

    def __len__(self) -> int:
        n = len(self.groups) // self.per_batch if self.drop_last else math.ceil(len(self.groups) / self.per_batch)
        return max(n, 1)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        blocks = rng.permutation(len(self.blocks)).tolist()
        order = [g for b in blocks for g in rng.permutation(self.blocks[b]).tolist()]
        if len(order) < self.per_batch:
            order = (order * math.ceil(self.per_batch / len(order)))[: self.per_batch]
        for b in range(len(self)):
            chosen = order[b * self.per_batch : (b + 1) * self.per_batch]
            batch = []
            for g in chosen:
                members = self.groups[g]
                pick = rng.choice(len(members), size=self.views, replace=len(members) < self.views)
                draws: dict[int, int] = {}
                for p in pick.tolist():
                    draws[p] = draws.get(p, -1) + 1
                    batch.append((members[p], draws[p]))
            if b >= self.skip:
                yield batch


# ---- config, checkpoints ------------------------------------------------------------------------------


@dataclass
class FadexTrainConfig:
    """Training settings (recorded in every checkpoint).

    Attributes:
        epochs: epochs (paper: 200, §4.1).
        batch_size: pairs per step (paper: 20, §4.1).
        lr: peak learning rate (paper: 3e-2, §4.1).
        optimizer: ``sgd`` (with ``momentum_sgd``; the paper's lr suits it) or ``adamw``.
        momentum_sgd: SGD momentum (MoCo: 0.9; paper silent).
        weight_decay: SGD weight decay (MoCo: 1e-4; paper silent).
        warmup_epochs: linear warm-up before the cosine decay.
        temperature: τ of Eq. 1 (paper silent; 0.1).
        momentum: key-encoder EMA momentum (MoCo: 0.999; paper silent).
        queue_size: FIFO queue length (paper silent; MoCo uses 65536 over ImageNet).
        views: pairs per operator in a batch.
        batching: ``operator`` (the operators of one clean image together: a grid of images x
            operators per batch, see :class:`LabelBatchSampler`) or ``random`` labels.
        crop: training crop side (px).
        gt_prob: chance a pair's x_HQ is its GT crop (§3.2's GT pairs).
        seed: seed of the initialisation, batches and crops.
        save_every: checkpoint every N epochs.
        keep: checkpoints kept (newest).
        max_minutes: stop after this wall time, with a checkpoint (None: no limit).
        loader_workers: DataLoader worker processes.
        model: the FaDeX architecture.
    """

    epochs: int = 200
    batch_size: int = 20
    lr: float = 3e-2
    optimizer: str = "sgd"
    momentum_sgd: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    temperature: float = 0.1
    momentum: float = 0.999
    queue_size: int = 4096
    views: int = 4
    batching: str = "operator"
    crop: int = 128
    gt_prob: float = 0.5
    seed: int = 0
    save_every: int = 1
    keep: int = 2
    max_minutes: float | None = None
    loader_workers: int = 0
    model: FadexConfig = field(default_factory=FadexConfig)

    #: fields that may change between a run and its resumption
    RESUMABLE_CHANGES = ("epochs", "save_every", "keep", "max_minutes", "loader_workers")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FadexTrainConfig:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        model = FadexConfig.from_dict(d.pop("model", {}))
        return cls(model=model, **d)

    def check(self) -> None:
        """Raise :class:`BadInputError` on impossible settings."""
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0 or self.temperature <= 0:
            raise BadInputError("epochs >= 1, batch size >= 2, lr > 0 and temperature > 0 are required")
        if not 0 <= self.momentum < 1:
            raise BadInputError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.gt_prob <= 1:
            raise BadInputError(f"gt_prob must be in [0, 1], got {self.gt_prob}")
        if self.optimizer not in ("sgd", "adamw"):
            raise BadInputError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.batching not in ("operator", "random"):
            raise BadInputError(f"batching must be 'operator' or 'random', got {self.batching!r}")


@dataclass
class TrainResult:
    """What a training run left."""

    out: Path
    checkpoint: Path
    epochs_done: int
    steps: int
    seconds: float
    last_loss: float
    stopped_early: bool


def _checkpoints(out: Path) -> list[Path]:
    root = out / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: json.loads((p / "trainer_state.json").read_text())["step"])


def _save_checkpoint(folder: Path, model: FaDeX, key_model: FaDeX, queue: LabelQueue,
                     opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    save_file({k: v.detach().cpu().contiguous() for k, v in key_model.state_dict().items()},
              str(tmp / "momentum.safetensors"))
    save_file({k: v.detach().cpu().contiguous() for k, v in queue.state_dict().items()}, str(tmp / "queue.safetensors"))
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    (tmp / "optimizer.pt").write_bytes(buf.getvalue())
    save_file({"torch_rng": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _lr_at(cfg: FadexTrainConfig, step: int, steps_per_epoch: int) -> float:
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def _collate(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch], dtype=torch.long)


def run_training(
    pairs: Sequence[str | Path],
    out: str | Path,
    cfg: FadexTrainConfig,
    *,
    resume: bool = True,
    cpu: bool = False,
    threads: int = 0,
    console: Any = None,
) -> TrainResult:
    """Train FaDeX on pair datasets; see the module docstring.

    Args:
        pairs: pair dataset folders.
        out: run folder (checkpoints, ``loss.jsonl``, final ``fadex.safetensors``).
        cfg: training settings.
        resume: continue from the newest checkpoint in ``out`` (its settings must match, except
            :attr:`FadexTrainConfig.RESUMABLE_CHANGES`).
        cpu: train on CPU even when a GPU is visible.
        threads: torch CPU threads (0: torch's default). On a shared CPU one thread can be much
            faster (measured on 2 busy cores: 0.37 s/step with 1 thread, 1.7 s/step with 2).
        console: a rich console for messages (default: stderr).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from rich.console import Console

    cfg.check()
    if threads:
        torch.set_num_threads(threads)
    console = console or Console(stderr=True)
    out = Path(out)
    accelerator = Accelerator(cpu=cpu or not torch.cuda.is_available())
    main = accelerator.is_main_process
    set_seed(cfg.seed)
    dataset = PairDataset(pairs, crop=cfg.crop, gt_prob=cfg.gt_prob, seed=cfg.seed)
    sampler = LabelBatchSampler(dataset.labels, cfg.batch_size, cfg.views, seed=cfg.seed,
                                operators=dataset.operators if cfg.batching == "operator" else None)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=_collate,
                                         num_workers=cfg.loader_workers)
    model = FaDeX(cfg.model)
    key_model = copy.deepcopy(model)
    for p in key_model.parameters():
        p.requires_grad_(False)
    queue = LabelQueue(cfg.queue_size, cfg.model.proj_dim)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum_sgd, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    epoch, step, skip = 0, 0, 0
    ckpts = _checkpoints(out) if resume else []
    if ckpts:
        from safetensors.torch import load_file

        last = ckpts[-1]
        state = json.loads((last / "trainer_state.json").read_text())
        saved = FadexTrainConfig.from_dict(state["config"]).to_dict()
        now = cfg.to_dict()
        diff = sorted(k for k in now if k not in FadexTrainConfig.RESUMABLE_CHANGES and saved.get(k) != now[k])
        if diff:
            raise BadInputError(f"{out} holds a run with other settings ({', '.join(diff)}); use a new --out "
                                "or --no-resume")
        model.load_state_dict(FaDeX.from_pretrained(last).state_dict())
        key_model.load_state_dict(load_file(str(last / "momentum.safetensors")))
        queue.load_state_dict(load_file(str(last / "queue.safetensors")))
        opt.load_state_dict(torch.load(io.BytesIO((last / "optimizer.pt").read_bytes()), weights_only=True))
        torch.set_rng_state(load_file(str(last / "rng.safetensors"))["torch_rng"])
        epoch, step, skip = state["epoch"], state["step"], state["batches_in_epoch"]
        if epoch >= cfg.epochs and (out / "fadex.safetensors").is_file():
            if main:
                console.print(f"FaDeX: already finished at step {step} (epoch {epoch}): {out}", highlight=False)
            return TrainResult(out, out, epoch, step, 0.0, float("nan"), False)
        if main:
            console.print(f"resuming from {last} (epoch {epoch}, step {step})")
    elif resume and (out / "trainer_state.json").exists() and main:
        console.print(f"note: {out} has a finished run; training again from scratch")
    out.mkdir(parents=True, exist_ok=True)
    # the prepared loader gives each process every N-th batch of the label-aware sampler
    model, opt, loader = accelerator.prepare(model, opt, loader)
    key_model.to(accelerator.device)
    queue.to(accelerator.device)
    steps_per_epoch = len(loader)
    if main:
        (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        console.print(f"FaDeX: {len(dataset)} pairs, {len(sampler.groups)} operators with positives, "
                      f"{steps_per_epoch} steps/epoch, {cfg.epochs} epochs on {accelerator.device} "
                      f"({accelerator.num_processes} process(es))")

    t_start = time.perf_counter()
    deadline = None if cfg.max_minutes is None else t_start + 60.0 * cfg.max_minutes
    log = (out / "loss.jsonl").open("a") if main else None
    last_loss = float("nan")
    stopped = False
    total_steps = cfg.epochs * steps_per_epoch

    def state_dict(ep: int, in_epoch: int) -> dict[str, Any]:
        return {"epoch": ep, "step": step, "batches_in_epoch": in_epoch, "config": cfg.to_dict(),
                "seconds": time.perf_counter() - t_start}

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("[bold]train fadex[/]"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console,
                        disable=not main or not console.is_terminal)
    task = progress.add_task("steps", total=total_steps, completed=step, info="")
    checkpoint = out
    with progress:
        while epoch < cfg.epochs and not stopped:
            dataset.start_epoch(epoch)
            sampler.start_epoch(epoch, skip * accelerator.num_processes)
            model.train()
            key_model.train()
            in_epoch = skip
            for x, labels in loader:
                x, labels = x.to(accelerator.device), labels.to(accelerator.device)
                for g in opt.param_groups:
                    g["lr"] = _lr_at(cfg, step, steps_per_epoch)
                loss, stats, k_all, lab_all = contrastive_step(
                    model, key_model, queue, x, labels, cfg.temperature,
                    gather=accelerator.gather, process_index=accelerator.process_index,
                )
                opt.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                opt.step()
                momentum_update(key_model, accelerator.unwrap_model(model), cfg.momentum)
                queue.enqueue(k_all, lab_all)
                step += 1
                in_epoch += 1
                last_loss = float(loss.detach())
                if log is not None:
                    log.write(json.dumps({"epoch": epoch, "step": step, "loss": round(last_loss, 6),
                                          "lr": opt.param_groups[0]["lr"], "pos_sim": round(stats["pos_sim"], 4),
                                          "neg_sim": round(stats["neg_sim"], 4), "queue": int(queue.count),
                                          "seconds": round(time.perf_counter() - t_start, 2)}) + "\n")
                    log.flush()
                progress.update(task, advance=1, info=f"epoch {epoch + 1}/{cfg.epochs} loss {last_loss:.4f}")
                if deadline is not None and time.perf_counter() > deadline:
                    stopped = True
                    break
            if stopped:
                if main:
                    checkpoint = out / "checkpoints" / f"step-{step:07d}"
                    _save_checkpoint(checkpoint, accelerator.unwrap_model(model), key_model, queue, opt,
                                     state_dict(epoch, in_epoch))
                break
            epoch += 1
            skip = 0
            if main and (epoch % cfg.save_every == 0 or epoch == cfg.epochs):
                checkpoint = out / "checkpoints" / f"epoch-{epoch:04d}"
                _save_checkpoint(checkpoint, accelerator.unwrap_model(model), key_model, queue, opt,
                                 state_dict(epoch, 0))
                for old in _checkpoints(out)[: -max(1, cfg.keep)]:
                    shutil.rmtree(old, ignore_errors=True)
    if log is not None:
        log.close()
    accelerator.wait_for_everyone()
    final = accelerator.unwrap_model(model)
    if main:
        final.save_pretrained(out, metadata={"epochs": str(epoch), "steps": str(step)})
        (out / "trainer_state.json").write_text(json.dumps(state_dict(epoch, 0), indent=2) + "\n")
        console.print(f"FaDeX: {step} steps, {epoch} epochs{' (stopped by --max-minutes)' if stopped else ''}, "
                      f"last loss {last_loss:.4f}, {time.perf_counter() - t_start:.0f} s -> {out}")
    return TrainResult(out, checkpoint if stopped else out, epoch, step, time.perf_counter() - t_start,
                       last_loss, stopped)
