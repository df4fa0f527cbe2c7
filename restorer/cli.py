"""Restorer commands: ``inscene restorer ...``, ``inscene train ...``, ``inscene analyze ...``.

Three Typer sub-apps registered by :mod:`inscene.cli`. Every heavy import (torch, accelerate, the
faces backends, Dask) happens inside a command body so ``inscene --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from inscene.cli_cluster import print_job_script_if_dry_run, with_cluster_options

restorer_app = typer.Typer(help="Face2Scene restorer: Stage I face pairs (§3.1).", no_args_is_help=True)
train_app = typer.Typer(help="Train the Face2Scene models (FaDeX §3.2/§7.1, restorer §3.3).", no_args_is_help=True)
analyze_app = typer.Typer(help="Analyse trained models (FaDeX Figure 3, §7.4).", no_args_is_help=True)



def _console():
    from rich.console import Console

    return Console()


# ---- inscene restorer ... ---------------------------------------------------------------------------


@restorer_app.command("prepare-pairs")
@with_cluster_options
def prepare_pairs(
    data: Annotated[Path, typer.Argument(help="Degraded dataset folder written by `inscene degrade` (HQ + K LQ).")],
    out: Annotated[Path, typer.Option("--out", help="Output dataset folder of face-pair shards.")] = Path("pairs"),
    ref_fr: Annotated[
        str, typer.Option("--ref-fr", help="Ref-FR backend: faceme (paper), gt (ground-truth face), passthrough.")
    ] = "gt",
    ref_fr_path: Annotated[
        Path | None, typer.Option("--ref-fr-path", help="faceme: the FaceMe checkout (with its weights).")
    ] = None,
    refs: Annotated[
        Path | None, typer.Option("--refs", help="Identity references: DIR/<identity_id>/*.jpg (faceme needs them).")
    ] = None,
    share: Annotated[
        int, typer.Option("--share", help="Also apply each operator G to this many other clean images (§3.2).")
    ] = 3,
    landmarks: Annotated[
        str, typer.Option("--landmarks", help="Face from: auto (LQ, else the clean image), lq (paper), hq.")
    ] = "auto",
    no_face: Annotated[
        str, typer.Option("--no-face", help="Images without a usable face: skip, or center (gt/passthrough only).")
    ] = "skip",
    detector: Annotated[str | None, typer.Option("--detector", help="Face detector (default: faces.detector).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the partner choice.")] = 0,
    device: Annotated[str, typer.Option("--device", help="torch device of the replayed degradations.")] = "cpu",
    threads: Annotated[
        int, typer.Option("--threads", help="torch threads per process (0: 1 per Dask worker, else torch's default).")
    ] = 0,
    split: Annotated[str | None, typer.Option("--split", help="Only this split.")] = None,
    subset: Annotated[str | None, typer.Option("--subset", help="Only this subset.")] = None,
    partition_size: Annotated[int, typer.Option("--partition-size", help="Images per partition (= per shard).")] = 50,
    cluster_opts=None,
    in_process: bool = False,
) -> None:
    """Stage I face pairs (x_HQ, x_LQ) with degradation labels for every LQ version (§3.1, §3.2)."""
    opts = cluster_opts
    if print_job_script_if_dry_run(opts):
        return
    from restorer.pairs import PairOptions, run_prepare_pairs

    options = PairOptions(
        ref_fr=ref_fr, ref_fr_path=ref_fr_path, detector=detector, share=share, landmarks=landmarks,
        no_face=no_face, refs=refs, seed=seed, device=device, threads=threads,
    )
    result = run_prepare_pairs(
        data, out, options, split=split, subset=subset, partition_size=partition_size,
        cluster=None if in_process else opts, console=_console(),
    )
    if not result.ok:
        raise typer.Exit(1)


# ---- inscene train ... ------------------------------------------------------------------------------


def _ints(text: str, what: str) -> tuple[int, ...]:
    from inscene.errors import BadInputError

    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise BadInputError(f"{what} must be comma-separated integers, got {text!r}") from None


@train_app.command("fadex")
def train_fadex(
    pairs: Annotated[
        list[Path], typer.Argument(help="Face-pair dataset folder(s) from `inscene restorer prepare-pairs`.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoints, config, loss log.")] = Path("fadex-run"),
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs (paper: 200, §4.1).")] = 200,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Pairs per step (paper: 20, §4.1).")] = 20,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate, cosine schedule (paper: 3e-2, §4.1).")] = 3e-2,
    optimizer: Annotated[str, typer.Option("--optimizer", help="sgd (momentum 0.9, MoCo's) or adamw.")] = "sgd",
    views: Annotated[int, typer.Option("--views", help="Pairs per operator G in a batch (positives).")] = 4,
    batching: Annotated[
        str, typer.Option("--batching", help="operator (one image's operators together: hard negatives) or random.")
    ] = "operator",
    crop: Annotated[int, typer.Option("--crop", help="Random square crop of each pair (px).")] = 128,
    widths: Annotated[
        str, typer.Option("--widths", help="Channels of the conv blocks; the last is Z_face's (256, §7.2).")
    ] = "64,128,128,256,256",
    strides: Annotated[str, typer.Option("--strides", help="Stride of each block (1 or 2).")] = "1,2,1,1,1",
    proj_dim: Annotated[int, typer.Option("--proj-dim", help="Dimension of q.")] = 128,
    queue_size: Annotated[int, typer.Option("--queue-size", help="MoCo FIFO queue length.")] = 4096,
    temperature: Annotated[float, typer.Option("--temperature", help="Eq. 1 temperature tau.")] = 0.1,
    momentum: Annotated[float, typer.Option("--momentum", help="EMA momentum of the key encoder.")] = 0.999,
    gt_prob: Annotated[float, typer.Option("--gt-prob", help="Chance x_HQ is the GT crop (GT pairs, §3.2).")] = 0.5,
    warmup: Annotated[float, typer.Option("--warmup-epochs", help="Linear warm-up epochs.")] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed.")] = 0,
    save_every: Annotated[int, typer.Option("--save-every", help="Checkpoint every N epochs.")] = 1,
    max_minutes: Annotated[
        float | None, typer.Option("--max-minutes", help="Stop (with a checkpoint) after this wall time.")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from the last checkpoint.")] = True,
    cpu: Annotated[bool, typer.Option("--cpu", help="Train on CPU even when a GPU is present.")] = False,
    loader_workers: Annotated[int, typer.Option("--loader-workers", help="DataLoader worker processes.")] = 0,
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads (0: torch's default).")] = 0,
) -> None:
    """Train FaDeX with the supervised-contrastive loss (Eq. 1) and a MoCo queue (§3.2, §7.1)."""
    from restorer.fadex import FadexConfig
    from restorer.train_fadex import FadexTrainConfig, run_training

    model = FadexConfig(widths=_ints(widths, "--widths"), strides=_ints(strides, "--strides"), proj_dim=proj_dim)
    cfg = FadexTrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, views=views, batching=batching, crop=crop,
        queue_size=queue_size,
        temperature=temperature, momentum=momentum, gt_prob=gt_prob, warmup_epochs=warmup, seed=seed,
        save_every=save_every, max_minutes=max_minutes, loader_workers=loader_workers, model=model,
    )
    result = run_training(pairs, out, cfg, resume=resume, cpu=cpu, threads=threads)
    typer.echo(f"FaDeX weights: {result.out}")


# ---- inscene analyze ... ----------------------------------------------------------------------------


@analyze_app.command("fadex")
def analyze_fadex(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="FaDeX checkpoint (.safetensors or run folder).")],
    images: Annotated[Path, typer.Option("--images", help="Folder of clean images (the first --count are used).")],
    out: Annotated[Path, typer.Option("--out", help="Figure-3 PNG to write.")] = Path("fadex-figure3.png"),
    count: Annotated[int, typer.Option("--count", help="Images to use (paper: 10, §7.4).")] = 10,
    size: Annotated[int, typer.Option("--size", help="Centre crop side fed to FaDeX (px).")] = 256,
    space: Annotated[str, typer.Option("--space", help="Embedding: q (projection, Eq. 1) or z (GAP of Z_face).")] = "q",
    as_json: Annotated[bool, typer.Option("--json", help="Print the numbers as JSON.")] = False,
) -> None:
    """Figure 3: cosine similarity under presets d1-d4, same degradation vs same image; prints the gap."""
    import json

    from restorer.analysis import figure3

    result = figure3(checkpoint, images, out, count=count, size=size, space=space)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        typer.echo(result.summary())
        typer.echo(f"figure: {out}")


@train_app.command("restorer")
def train_restorer(
    data: Annotated[list[Path], typer.Argument(help="Training dataset folder(s) from `inscene degrade` (HQ + K LQ).")],
    fadex: Annotated[
        Path | None, typer.Option("--fadex", help="Trained FaDeX (`inscene train fadex` run folder).")
    ] = None,
    pairs: Annotated[
        list[Path] | None,
        typer.Option("--pairs", help="Face-pair folder(s) from `inscene restorer prepare-pairs` (else GT face pairs)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Run folder (checkpoints, state, log).")] = Path("restorer-run"),
    base: Annotated[
        str, typer.Option("--base", help="SD-Turbo folder or Hub id (offline: `inscene weights fetch sd-turbo`).")
    ] = "stabilityai/sd-turbo",
    split: Annotated[str, typer.Option("--split", help="Shard split folder to train on.")] = "train",
    iterations: Annotated[int, typer.Option("--iterations", help="Optimiser steps (paper: 20K, §4.1).")] = 20_000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Scenes per device per micro-batch.")] = 8,
    grad_accum: Annotated[
        int, typer.Option("--grad-accum", help="Micro-batches per step; effective batch = batch-size x grad-accum x "
                          "processes (paper: 64, §4.1).")
    ] = 1,
    lr: Annotated[
        float, typer.Option("--lr", help="AdamW learning rate (paper: 2e-5), reached after --warmup-steps of linear "
                            "warm-up, then constant.")
    ] = 2e-5,
    warmup_steps: Annotated[
        int, typer.Option("--warmup-steps", help="Linear LR warm-up steps (S3Diff's 500; short runs want fewer).")
    ] = 500,
    crop: Annotated[int, typer.Option("--crop", help="Training crop side, px (S3Diff: 512).")] = 512,
    tokens: Annotated[int, typer.Option("--tokens", help="Degradation tokens: 21 (paper), 5, 1, 0 (ablations).")] = 21,
    vae_rank: Annotated[int, typer.Option("--vae-rank", help="VAE encoder LoRA rank (paper: 16).")] = 16,
    unet_rank: Annotated[int, typer.Option("--unet-rank", help="UNet LoRA rank (paper: 32).")] = 32,
    cfg: Annotated[float, typer.Option("--cfg", help="CFG scale recorded for inference (paper: 1.10).")] = 1.10,
    neg_prob: Annotated[float, typer.Option("--neg-prob", help="Negative-prompt probability p_n (§7.2).")] = 0.05,
    lambda_l2: Annotated[float, typer.Option("--lambda-l2", help="L2 weight (paper: 2.0).")] = 2.0,
    lambda_lpips: Annotated[float, typer.Option("--lambda-lpips", help="LPIPS weight (paper: 5.0).")] = 5.0,
    lambda_gan: Annotated[float, typer.Option("--lambda-gan", help="GAN weight (paper: 0.5); 0 = no GAN.")] = 0.5,
    mixed_precision: Annotated[
        str, typer.Option("--mixed-precision", help="auto (the accelerate config's), no, bf16 or fp16.")
    ] = "auto",
    gradient_checkpointing: Annotated[
        bool, typer.Option("--gradient-checkpointing", help="UNet activation checkpointing (less memory).")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed.")] = 0,
    save_every: Annotated[int, typer.Option("--save-every", help="Checkpoint every N steps.")] = 1000,
    log_every: Annotated[int, typer.Option("--log-every", help="Loss-log line every N steps.")] = 10,
    loader_workers: Annotated[int, typer.Option("--loader-workers", help="DataLoader worker processes.")] = 4,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Stop after N steps in this call (resume continues).")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from the run folder's state.")] = True,
    cpu: Annotated[bool, typer.Option("--cpu", help="Train on CPU even when a GPU is present.")] = False,
) -> None:
    """Train MapNet + LoRA (VAE encoder, UNet) + conv_in of the one-step SD-Turbo (§3.3, §4.1, §7.2).

    Multi-GPU / multi-node: `accelerate launch --config_file restorer/configs/accelerate_8gpu.yaml
    -m inscene train restorer ...` (see the README).
    """
    from restorer.train_restorer import RestorerTrainConfig, run_training

    config = RestorerTrainConfig(
        base=base, fadex=str(fadex) if fadex is not None else None, num_tokens=tokens, vae_lora_rank=vae_rank,
        unet_lora_rank=unet_rank, iterations=iterations, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
        warmup=warmup_steps,
        lambda_l2=lambda_l2, lambda_lpips=lambda_lpips, lambda_gan=lambda_gan, neg_prob=neg_prob, crop=crop,
        cfg_scale=cfg, mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing, seed=seed,
        save_every=save_every, log_every=log_every, loader_workers=loader_workers,
    )
    result = run_training(data, out, config, pairs=pairs or (), split=split, resume=resume, cpu=cpu,
                          console=_console(), max_steps=max_steps)
    typer.echo(f"checkpoint: {result.checkpoint}")


# @stage2-commands (train restorer is defined above this line)
