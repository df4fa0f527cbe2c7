"""``python -m benchmarks.perf degrade``: our degradation pipeline against BasicSR's functions.

(a) ours: ``sample_params`` + ``apply`` per image (the realesrgan profile, JPEG through libjpeg),
with the LQ kept at GT/4 as Real-ESRNet's ``feed_data`` leaves it (``output="lq"``); the
throughput with InScene's resize back to GT size (``output="gt"``) is printed as well.
(b) BasicSR (the ``basicsr-fixed`` package, extra ``inscene[bench]``): the Real-ESRGAN dataset's
kernel draws (``random_mixed_kernels``, ``circular_lowpass_kernel``) and Real-ESRNet's
``feed_data`` order with the yml's default options, one image at a time as CPU data loaders run
it: filter2D, F.interpolate, random_add_gaussian/poisson_noise_pt, DiffJPEG, ..., final rounding.
Both skip the GT unsharp mask: our profile leaves it off (see ``DegradationProfile.usm``).

Both run on the same 512x512 photos (scikit-image samples, resized and flipped), alternating
rounds, in this process; the ratio is (a) throughput / (b) throughput.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time

import numpy as np
import torch


def arguments(p: argparse.ArgumentParser) -> None:
    """Options of the ``degrade`` benchmark."""
    p.add_argument("--n", type=int, default=64, help="images per run (64)")
    p.add_argument("--size", type=int, default=512, help="image side in px (512)")
    p.add_argument("--rounds", type=int, default=2, help="alternating runs of each (2)")
    p.add_argument("--device", default="cpu", help="device for ours (cpu; cuda also times ours alone)")


def _photos(n: int, size: int) -> list[np.ndarray]:
    import skimage.data
    from PIL import Image

    srcs = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(),
            skimage.data.rocket(), skimage.data.retina()]
    out = []
    for i in range(n):
        im = Image.fromarray(srcs[i % len(srcs)]).resize((size, size), Image.Resampling.BICUBIC)
        arr = np.asarray(im)
        if (i // len(srcs)) % 2:
            arr = arr[:, ::-1]
        out.append(np.ascontiguousarray(arr))
    return out


def _ours(imgs: list[np.ndarray], device: str, output: str = "lq", first: int = 0) -> None:
    from inscene.degradations import apply, sample_params

    for i, img in enumerate(imgs):
        apply(img, sample_params(first + i, output=output), device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class _BasicSR:
    """Real-ESRNet's data synthesis built from BasicSR's own functions, per image."""

    def __init__(self) -> None:
        from basicsr.data.degradations import (
            circular_lowpass_kernel,
            random_add_gaussian_noise_pt,
            random_add_poisson_noise_pt,
            random_mixed_kernels,
        )
        from basicsr.utils import DiffJPEG
        from basicsr.utils.img_process_util import filter2D

        self.circular_lowpass_kernel = circular_lowpass_kernel
        self.random_mixed_kernels = random_mixed_kernels
        self.gauss = random_add_gaussian_noise_pt
        self.poisson = random_add_poisson_noise_pt
        self.filter2D = filter2D
        self.jpeger = DiffJPEG(differentiable=False)
        self.kinds = ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
        self.probs = [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]
        self.sizes = [7, 9, 11, 13, 15, 17, 19, 21]

    def _kernel(self, sigma: list[float]) -> torch.Tensor:
        size = random.choice(self.sizes)
        if np.random.uniform() < 0.1:
            lo = math.pi / 3 if size < 13 else math.pi / 5
            k = self.circular_lowpass_kernel(np.random.uniform(lo, math.pi), size, pad_to=False)
        else:
            k = self.random_mixed_kernels(self.kinds, self.probs, size, sigma, sigma,
                                          [-math.pi, math.pi], [0.5, 4], [1, 2], noise_range=None)
        pad = (21 - size) // 2
        return torch.FloatTensor(np.pad(k, ((pad, pad), (pad, pad))))[None]

    def _stage_noise(self, out, sigma, scale):
        if np.random.uniform() < 0.5:
            return self.gauss(out, sigma_range=sigma, clip=True, rounds=False, gray_prob=0.4)
        return self.poisson(out, scale_range=scale, gray_prob=0.4, clip=True, rounds=False)

    def _jpeg(self, out):
        q = out.new_zeros(out.size(0)).uniform_(30, 95)
        return self.jpeger(torch.clamp(out, 0, 1).contiguous(), quality=q)

    def _resize(self, out, size=None, factor=None):
        mode = random.choice(["area", "bilinear", "bicubic"])
        if size is not None:
            return torch.nn.functional.interpolate(out, size=size, mode=mode)
        return torch.nn.functional.interpolate(out, scale_factor=factor, mode=mode)

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        # dataset side: kernels drawn per image
        k1, k2 = self._kernel([0.2, 3]), self._kernel([0.2, 1.5])
        if np.random.uniform() < 0.8:
            size = random.choice(self.sizes)
            sinc = torch.FloatTensor(self.circular_lowpass_kernel(
                np.random.uniform(math.pi / 3, math.pi), size, pad_to=21))[None]
        else:
            sinc = torch.zeros(1, 21, 21)
            sinc[0, 10, 10] = 1
        gt = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255)[None].contiguous()
        h, w = gt.shape[-2:]
        # model side: feed_data, first degradation
        out = self.filter2D(gt, k1)
        kind = random.choices(["up", "down", "keep"], [0.2, 0.7, 0.1])[0]
        factor = {"up": np.random.uniform(1, 1.5), "down": np.random.uniform(0.15, 1), "keep": 1}[kind]
        out = self._resize(out, factor=factor)
        out = self._stage_noise(out, [1, 30], [0.05, 3])
        out = self._jpeg(out)
        # second degradation
        if np.random.uniform() < 0.8:
            out = self.filter2D(out.contiguous(), k2)
        kind = random.choices(["up", "down", "keep"], [0.3, 0.4, 0.3])[0]
        factor = {"up": np.random.uniform(1, 1.2), "down": np.random.uniform(0.3, 1), "keep": 1}[kind]
        out = self._resize(out, size=(int(h / 4 * factor), int(w / 4 * factor)))
        out = self._stage_noise(out, [1, 25], [0.05, 2.5])
        if np.random.uniform() < 0.5:
            out = self._resize(out, size=(h // 4, w // 4))
            out = self.filter2D(out.contiguous(), sinc)
            out = self._jpeg(out)
        else:
            out = self._jpeg(out)
            out = self._resize(out, size=(h // 4, w // 4))
            out = self.filter2D(out.contiguous(), sinc)
        return torch.clamp((out * 255.0).round(), 0, 255) / 255.0


def _baseline(imgs: list[np.ndarray], bsr: _BasicSR, first: int = 0) -> None:
    random.seed(first)
    np.random.seed(first)
    torch.manual_seed(first)
    for img in imgs:
        bsr(img)


def bench_degrade(args: argparse.Namespace) -> float:
    """Throughput of ours vs BasicSR's functions; returns the ratio."""
    imgs = _photos(args.n, args.size)
    try:
        bsr = _BasicSR()
    except ImportError as exc:  # the extra is not installed
        raise SystemExit(
            f"degrade benchmark needs BasicSR: pip install -e '.[bench]' ({exc})"
        ) from None
    _ours(imgs[:4], "cpu")
    _baseline(imgs[:4], bsr)
    # Alternate in chunks of 8 images, so that a slow spell of a shared machine hits both sides.
    ours_s, base_s, gt_s = [], [], []
    for _ in range(args.rounds):
        t_base = t_ours = t_gt = 0.0
        for c in range(0, args.n, 8):
            chunk = imgs[c : c + 8]
            t0 = time.perf_counter()
            _baseline(chunk, bsr, c)
            t1 = time.perf_counter()
            _ours(chunk, "cpu", "lq", c)
            t2 = time.perf_counter()
            _ours(chunk, "cpu", "gt", c)
            t3 = time.perf_counter()
            t_base, t_ours, t_gt = t_base + t1 - t0, t_ours + t2 - t1, t_gt + t3 - t2
        base_s.append(t_base)
        ours_s.append(t_ours)
        gt_s.append(t_gt)
    ours = args.n / statistics.median(ours_s)
    base = args.n / statistics.median(base_s)
    print(
        f"degrade: {args.n} images {args.size}x{args.size} on CPU ({torch.get_num_threads()} torch "
        f"threads), one image at a time, median of {args.rounds} rounds alternating every 8 images"
    )
    print(f"BasicSR functions (Real-ESRNet feed_data order): {base:7.2f} images/s")
    print(f"inscene sample_params + apply (libjpeg JPEG)  : {ours:7.2f} images/s")
    print(f"  ... with the LQ resized back to GT size     : {args.n / statistics.median(gt_s):7.2f} images/s")
    if args.device.startswith("cuda") and torch.cuda.is_available():
        for size in (512, 1024):
            batch = _photos(min(args.n, 64), size)
            _ours(batch[:4], args.device)
            t0 = time.perf_counter()
            _ours(batch, args.device)
            print(f"inscene on {args.device} at {size}x{size}: {len(batch) / (time.perf_counter() - t0):8.1f} images/s")
    return ours / base
