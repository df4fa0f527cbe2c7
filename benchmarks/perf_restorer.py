"""``python -m benchmarks.perf restorer``: degradation-token overhead (FaDeX + MapNet) vs the UNet step.

Provenance: Face2Scene (arXiv 2603.16570) §4.2 "Model Complexity" (Stage II cost) and §3.2 (FaDeX ->
MapNet -> tokens that condition the one-step SD-Turbo).

On CPU, in one process: FaDeX (the default :class:`restorer.fadex.FadexConfig`) on a face pair of
``--pair`` px and MapNet at the paper's width (256 -> 512 channels, 8 heads, 21 tokens) against one
step of the tiny SD-Turbo-like UNet (``restorer.sdturbo.write_tiny_sdturbo``) on the latent of a
``--size`` px scene with both CFG branches batched, as the restorer runs them. The best of
``--rounds`` alternating runs of each is compared (other processes only slow a run down). The last
line is ``ratio=<(FaDeX + MapNet) / UNet step>``: the relative cost of the degradation tokens next
to a (tiny) UNet; on the real SD-Turbo UNet the same tokens cost far less, relatively (see the GPU
figures in the restorer's notes).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

HELP = "FaDeX + MapNet (degradation tokens) vs one tiny SD-Turbo UNet step with CFG"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=512, help="scene side in px (512)")
    p.add_argument("--pair", type=int, default=96, help="face pair side in px (96)")
    p.add_argument("--rounds", type=int, default=5, help="alternating runs of each (5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on shared machines)")


def run(args: argparse.Namespace) -> float:
    import torch

    from inscene.config import InsceneConfig
    from restorer.fadex import FaDeX
    from restorer.mapnet import MapNet
    from restorer.onestep import OneStepSD
    from restorer.sdturbo import write_tiny_sdturbo

    torch.set_num_threads(args.threads)
    rs = InsceneConfig().restorer
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="inscene-perf-restorer-") as tmp:
        folder = write_tiny_sdturbo(Path(tmp) / "sd")
        onestep = OneStepSD.from_pretrained(folder, positive_prompt=rs.positive_prompt,
                                            negative_prompt=rs.negative_prompt).eval()
    fadex = FaDeX().eval()
    mapnet = MapNet(fadex.config.channels, rs.mapnet_channels, rs.mapnet_heads, onestep.cross_attention_dim,
                    rs.num_tokens).eval()
    pair = torch.rand(1, 6, args.pair, args.pair)
    lq = torch.rand(1, 3, args.size, args.size) * 2 - 1

    def tokens() -> torch.Tensor:
        return mapnet(fadex.encode(pair).z_face)

    with torch.no_grad():
        latents = onestep.encode(lq)
        tok = tokens()

        def unet_step() -> torch.Tensor:
            return onestep.denoise(latents, tok, cfg_scale=rs.cfg_scale)

        tokens(), unet_step()  # warm-up
        t_tok, t_unet = [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            tokens()
            t_tok.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            unet_step()
            t_unet.append(time.perf_counter() - t0)
    z = fadex.encode(pair).z_face
    best_tok, best_unet = min(t_tok), min(t_unet)
    n_fadex = sum(p.numel() for p in fadex.parameters()) / 1e6
    n_map = sum(p.numel() for p in mapnet.parameters()) / 1e6
    n_unet = sum(p.numel() for p in onestep.unet.parameters()) / 1e6
    print(f"FaDeX ({n_fadex:.2f} M params) on a {args.pair}x{args.pair} pair -> Z_face {tuple(z.shape[1:])}; "
          f"MapNet ({n_map:.2f} M) -> {tok.shape[1]} tokens of width {tok.shape[2]}: {best_tok * 1e3:.1f} ms")
    print(f"tiny UNet ({n_unet:.2f} M params) on a {args.size}x{args.size} scene's latent {tuple(latents.shape[1:])}, "
          f"two CFG branches batched: {best_unet * 1e3:.1f} ms")
    print(f"best of {args.rounds} rounds, {args.threads} torch thread(s), CPU")
    return best_tok / best_unet


# --------------------------------------------------------------------------------------------
# restorer-stage2: Stage II latency/memory and one training step, on the real architecture (GPU)

HELP_STAGE2 = "Stage II latency (with/without CFG), peak memory and one training step on SD-Turbo's architecture"


def arguments_stage2(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", choices=("sd-turbo", "tiny"), default="sd-turbo",
                   help="sd-turbo: the real architecture with random weights (no download); tiny: a smoke test")
    p.add_argument("--device", default="cuda", help="torch device (cuda)")
    p.add_argument("--dtype", default="bf16", help="inference dtype: bf16, fp16, fp32 (bf16)")
    p.add_argument("--size", type=int, default=1024, help="scene side for the latency (1024)")
    p.add_argument("--pair", type=int, default=256, help="face pair side (256)")
    p.add_argument("--repeats", type=int, default=10, help="timed runs after 3 warm-ups (10)")
    p.add_argument("--train-batch", type=int, default=4, help="training step batch (4)")
    p.add_argument("--train-size", type=int, default=512, help="training crop side (512)")
    p.add_argument("--no-train", action="store_true", help="skip the training step")


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")


def _stage2_model(arch: str, device: str) -> tuple:
    import torch

    from inscene.config import InsceneConfig
    from restorer.fadex import FaDeX
    from restorer.mapnet import MapNet
    from restorer.onestep import OneStepSD, encode_prompts
    from restorer.sdturbo import SD_TURBO_CONFIGS, _tiny_configs, build_components, write_tiny_tokenizer

    rs = InsceneConfig().restorer
    configs = SD_TURBO_CONFIGS if arch == "sd-turbo" else _tiny_configs(32)
    with tempfile.TemporaryDirectory() as tmp:
        from transformers import CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(write_tiny_tokenizer(Path(tmp) / "tok"))
    torch.manual_seed(0)
    parts = build_components(configs, vocab_size=len(tokenizer))
    text = parts["text_encoder"].to(device)
    embeds = encode_prompts(tokenizer, text, [rs.positive_prompt, rs.negative_prompt])
    del text, parts["text_encoder"]
    sched = {k: v for k, v in dict(parts["scheduler"].config).items() if not k.startswith("_")}
    ranks = (rs.vae_lora_rank, rs.unet_lora_rank) if arch == "sd-turbo" else (4, 4)
    onestep = OneStepSD(parts["unet"], parts["vae"], sched, embeds, vae_lora_rank=ranks[0], unet_lora_rank=ranks[1])
    fadex = FaDeX()
    channels, heads = (rs.mapnet_channels, rs.mapnet_heads) if arch == "sd-turbo" else (32, 8)
    mapnet = MapNet(fadex.config.channels, channels, heads, onestep.cross_attention_dim, rs.num_tokens)
    return onestep.to(device), fadex.to(device).eval(), mapnet.to(device), rs


def run_stage2(args: argparse.Namespace) -> tuple[float, str]:
    import statistics

    import torch
    import torch.nn.functional as F

    from restorer.model import parse_dtype

    dev = args.device
    dtype = parse_dtype(args.dtype)
    t0 = time.perf_counter()
    onestep, fadex, mapnet, rs = _stage2_model(args.arch, dev)
    print(f"built {args.arch} (random weights) in {time.perf_counter() - t0:.1f} s on {dev}"
          + (f" ({torch.cuda.get_device_name()})" if dev.startswith("cuda") else ""))
    n_unet = sum(p.numel() for p in onestep.unet.parameters()) / 1e6
    n_train = sum(p.numel() for _, p in onestep.named_trainable_parameters()) / 1e6
    print(f"UNet {n_unet:.2f} M params; trainable (LoRA {onestep.vae_lora_rank}/{onestep.unet_lora_rank} + conv_in) "
          f"{n_train:.2f} M; MapNet {sum(p.numel() for p in mapnet.parameters()) / 1e6:.2f} M")

    # ---- inference latency ------------------------------------------------------------------
    onestep.eval().to(dtype=dtype)
    mapnet.eval()
    pair = torch.rand(1, 6, args.pair, args.pair, device=dev)
    lq = torch.rand(1, 3, args.size, args.size, device=dev, dtype=dtype) * 2 - 1

    def stage2(cfg: float | None) -> torch.Tensor:
        tok = mapnet(fadex.encode(pair).z_face).to(dtype)
        return onestep(lq, tok, cfg_scale=cfg)

    results = {}
    with torch.inference_mode():
        for label, cfg in (("cfg", rs.cfg_scale), ("no-cfg", None)):
            for _ in range(3):
                stage2(cfg)
            _sync(dev)
            _peak_reset(dev)
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                stage2(cfg)
                _sync(dev)
                times.append(time.perf_counter() - t)
            results[label] = (statistics.median(times), min(times), _peak_gib(dev))
            print(f"Stage II at {args.size}x{args.size}, {args.dtype}, {label:>6}: median {results[label][0]:.3f} s "
                  f"(best {results[label][1]:.3f} s), peak memory {results[label][2]:.2f} GiB")

    # ---- one training step --------------------------------------------------------------------
    if not args.no_train:
        from restorer.losses import DinoDiscriminator, LPIPSLoss, create_dino_backbone

        onestep.to(dtype=torch.float32).train()
        onestep.set_trainable(True)
        mapnet.train()
        lpips = LPIPSLoss(pretrained=False).to(dev)
        vit = {} if args.arch == "sd-turbo" else {"embed_dim": 32, "depth": 4, "num_heads": 2, "img_size": 32}
        disc = DinoDiscriminator(create_dino_backbone(pretrained=False, **vit)).to(dev).train()
        params = [p for _, p in onestep.named_trainable_parameters()] + list(mapnet.parameters())
        opt = torch.optim.AdamW(params, lr=rs.learning_rate)
        opt_d = torch.optim.AdamW(disc.head_parameters(), lr=rs.learning_rate)
        b, s = args.train_batch, args.train_size
        lq_t = torch.rand(b, 3, s, s, device=dev) * 2 - 1
        hq_t = torch.rand(b, 3, s, s, device=dev) * 2 - 1
        pairs = torch.rand(b, 6, args.pair, args.pair, device=dev)
        amp = dtype if dev.startswith("cuda") and dtype != torch.float32 else None

        def step() -> None:
            with torch.autocast(device_type=dev.split(":")[0], dtype=amp, enabled=amp is not None):
                with torch.no_grad():
                    z = fadex.encode(pairs).z_face
                pred = onestep(lq_t, mapnet(z), sample_posterior=True)
            loss = rs.lambda_l2 * F.mse_loss(pred.float(), hq_t) + rs.lambda_lpips * lpips(pred, hq_t)
            loss = loss + rs.lambda_gan * disc.loss(disc(pred), real=True)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            opt_d.zero_grad(set_to_none=True)
            logits = disc(torch.cat([hq_t, pred.detach()]))
            ld = disc.loss([x[:b] for x in logits], True) + disc.loss([x[b:] for x in logits], False)
            (rs.lambda_gan * ld).backward()
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)

        for _ in range(2):
            step()
        _sync(dev)
        _peak_reset(dev)
        times = []
        for _ in range(max(3, args.repeats // 2)):
            t = time.perf_counter()
            step()
            _sync(dev)
            times.append(time.perf_counter() - t)
        print(f"training step, batch {b} at {s}x{s} (L2 + LPIPS + DINO GAN, {args.dtype} autocast): median "
              f"{statistics.median(times):.3f} s, peak memory {_peak_gib(dev):.2f} GiB")
    ratio = results["cfg"][0] / results["no-cfg"][0]
    return ratio, f"cfg_s={results['cfg'][0]:.4f} nocfg_s={results['no-cfg'][0]:.4f} peak_gib={results['cfg'][2]:.2f}"
