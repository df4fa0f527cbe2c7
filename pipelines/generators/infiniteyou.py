"""InfiniteYou on FLUX.1-dev through diffusers: the paper's synthetic-scene generator (§6.1).

Provenance: Face2Scene §6.1 generates the synthetic InScene scenes with InfiniteYou (Jiang et al.,
ICCV 2025) on FLUX.1-dev, with InfiniteYou's stage-1 ("sim_stage1") weights for stronger identity
and the Shakker-Labs anti-blur LoRA. This module wires the released weights into diffusers' stock
:class:`~diffusers.FluxControlNetPipeline`; it does not import InfiniteYou's code.

InfiniteYou behaviours reproduced (read from its released pipeline):

- **Reference face**: insightface antelopev2 detector at det size 640, then 320, then 160 until a
  face is found; the largest face; its 5 keypoints.
- **Identity embedding**: the 112x112 ArcFace crop (``norm_crop``) of the *BGR* image, scaled to
  [-1, 1], embedded by facexlib's IR-SE50 ArcFace (:mod:`.arcface_irse`), L2-normalised 512-D.
- **Projection**: the resampler of ``image_proj_model.bin`` (:mod:`.resampler`) maps it to 8
  tokens of width 4096, in the pipeline dtype.
- **InfuseNet**: a ``FluxControlNetModel`` (``InfuseNetModel/``) whose text stream is replaced by
  the identity tokens (``encoder_hidden_states`` = tokens, ``txt_ids`` = zeros), with FLUX guidance
  1.0 for the ControlNet and the pooled CLIP text embedding; its residuals go into the FLUX
  transformer at conditioning scale 1.0 over the whole schedule (start 0, end 1). The stock
  pipeline passes the prompt's tokens to the ControlNet, so :func:`infuse_identity` swaps them
  in a forward pre-hook for the duration of one call.
- **Control image**: all black at the output size (no pose control), VAE-encoded and packed by
  the stock pipeline as for any InstantX-style FLUX ControlNet.
- **Sampling**: the FLUX transformer sees the prompt (CLIP pooled + T5, 512 tokens), guidance 3.5,
  30 steps, sigmas ``linspace(1, 1/n, n)`` with FLUX's resolution-dependent shift; 864x1152; bf16.
- **LoRAs**: ``load_lora_weights`` + ``set_adapters`` with per-LoRA scales.

Differences: each image's noise comes from its own ``torch.Generator(seed)`` on the CPU (so an
image depends only on its seed, not on the batch or the device), where InfiniteYou seeds the
global RNG; the same seed therefore gives a different (equally valid) image than InfiniteYou's app.
InfiniteYou's optional pose control image (keypoints drawn from a second photo) is not used, as
in the paper's text-driven scenes.

Weights (``inscene weights fetch infiniteyou``, which also fetches what it requires):
``ByteDance/InfiniteYou`` (``infu_flux_v1.0/sim_stage1/{InfuseNetModel/, image_proj_model.bin}``
and the antelopev2 pack under ``supports/insightface``), ``black-forest-labs/FLUX.1-dev`` (gated:
accept its licence on the Hub first), facexlib's ``recognition_arcface_ir_se50.pth``, and
``inscene weights fetch antiblur-lora``. Explicit folders can be given per component.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from inscene.errors import BadInputError, InsceneError
from pipelines.generators import Generator

#: Detector input sizes InfiniteYou tries in turn on a reference photo.
ID_DET_SIZES = (640, 320, 160)
_STAGE_MODEL = {"sim_stage1": "infiniteyou", "aes_stage2": "infiniteyou-aes"}
_DTYPES = ("auto", "bfloat16", "float16", "float32")


def _quiet_libraries() -> None:
    """Keep diffusers/transformers to errors: progress bars and the CLIP 77-token truncation notice
    (FLUX's CLIP only gives the pooled vector; T5 reads the whole prompt) would flood worker logs."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@contextlib.contextmanager
def infuse_identity(controlnet: Any, tokens: Any, guidance: float | None) -> Iterator[None]:
    """Make every ControlNet call inside the block see the identity tokens instead of the text.

    A forward pre-hook replaces ``encoder_hidden_states`` with ``tokens`` (``(B, N, D)``, or
    ``(1, N, D)`` broadcast to the batch), ``txt_ids`` with ``N`` zero positions and, when the
    ControlNet embeds guidance, ``guidance`` with ``guidance`` (InfiniteYou uses 1.0).
    """
    import torch

    def hook(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        batch = hidden.shape[0]
        t = tokens
        if t.shape[0] != batch:
            if batch % t.shape[0]:
                raise InsceneError(f"{t.shape[0]} identity conditions for a batch of {batch} images")
            t = t.repeat_interleave(batch // t.shape[0], dim=0)
        kwargs["encoder_hidden_states"] = t.to(device=hidden.device, dtype=hidden.dtype)
        kwargs["txt_ids"] = torch.zeros(t.shape[1], 3, device=hidden.device, dtype=hidden.dtype)
        if guidance is not None and kwargs.get("guidance") is not None:
            kwargs["guidance"] = torch.full_like(kwargs["guidance"], float(guidance))
        return args, kwargs

    handle = controlnet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def parse_lora(spec: str) -> tuple[str, float]:
    """``NAME_OR_FILE[:SCALE]`` -> ``(name_or_file, scale)`` (scale 1.0 when omitted)."""
    name, sep, scale = spec.rpartition(":")
    if sep and name and not scale.startswith(("/", "\\")):
        try:
            return name, float(scale)
        except ValueError:
            pass
    return spec, 1.0


@dataclass
class InfiniteYouGenerator(Generator):
    """InfiniteYou (FLUX.1-dev + InfuseNet + identity resampler) on diffusers.

    Args:
        stage: ``sim_stage1`` (the paper's, §6.1) or ``aes_stage2``.
        width, height: output size (InfiniteYou's default 864x1152; multiples of 16).
        steps: denoising steps (30).
        guidance: FLUX guidance of the transformer (3.5).
        infusenet_scale: ControlNet conditioning scale (1.0).
        infusenet_start, infusenet_end: fraction of the schedule InfuseNet is active (0, 1).
        infusenet_guidance: FLUX guidance given to InfuseNet (1.0).
        lora_specs: ``(name or file, scale)``; names are ``inscene weights`` entries. Default: the
            paper's anti-blur LoRA at 1.0 (paper silent on the scale; the LoRA's card suggests
            1.0-1.5).
        dtype: ``auto`` (bf16 on CUDA, fp32 on CPU), ``bfloat16``, ``float16`` or ``float32``.
        device: ``auto`` (CUDA when visible), ``cuda``, ``cuda:N`` or ``cpu``.
        cpu_offload: diffusers model CPU offload (fits ~24 GB GPUs, slower).
        max_sequence_length: T5 tokens (512).
        id_detector: detector for the reference face: ``insightface`` (antelopev2, InfiniteYou's)
            or any :func:`inscene.faces.create_detector` name (``dlib`` offline).
        flux_path, infiniteyou_path, arcface_path, antelopev2_path: explicit weight locations
            (else ``inscene weights`` looks in its usual places). ``infiniteyou_path`` may be the
            repo snapshot or the stage folder holding ``InfuseNetModel/``.
    """

    name: ClassVar[str] = "infiniteyou"
    version: ClassVar[str] = "infu_flux_v1.0"
    uses_gpu: ClassVar[bool] = True
    paper: ClassVar[bool] = True

    stage: str = "sim_stage1"
    width: int = 864
    height: int = 1152
    steps: int = 30
    guidance: float = 3.5
    infusenet_scale: float = 1.0
    infusenet_start: float = 0.0
    infusenet_end: float = 1.0
    infusenet_guidance: float = 1.0
    lora_specs: tuple[tuple[str, float], ...] = (("antiblur-lora", 1.0),)
    dtype: str = "auto"
    device: str = "auto"
    cpu_offload: bool = False
    max_sequence_length: int = 512
    id_detector: str = "insightface"
    flux_path: str | None = None
    infiniteyou_path: str | None = None
    arcface_path: str | None = None
    antelopev2_path: str | None = None
    _state: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.stage not in _STAGE_MODEL:
            raise BadInputError(f"InfiniteYou stage must be one of {sorted(_STAGE_MODEL)}, got {self.stage!r}")
        if self.dtype not in _DTYPES:
            raise BadInputError(f"dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        if self.width % 16 or self.height % 16 or self.width <= 0 or self.height <= 0:
            raise BadInputError(f"resolution must be positive multiples of 16, got {self.width}x{self.height}")
        if self.steps < 1:
            raise BadInputError(f"steps must be >= 1, got {self.steps}")
        self.lora_specs = tuple((str(n), float(s)) for n, s in self.lora_specs)

    # ---- weights -----------------------------------------------------------------------------

    def weight_paths(self) -> dict[str, Path]:
        """Locate every file this generator needs.

        Raises:
            MissingWeightsError: one line naming the first missing file and the fetch command.
        """
        from inscene import weights

        model = _STAGE_MODEL[self.stage]
        explicit = Path(self.infiniteyou_path).expanduser() if self.infiniteyou_path else None
        if explicit is not None and (explicit / "InfuseNetModel").is_dir():
            infu = explicit
            for rel in ("image_proj_model.bin", "InfuseNetModel/config.json"):
                if not (infu / rel).is_file():
                    from inscene.errors import MissingWeightsError

                    raise MissingWeightsError(model, rel, [str(infu)], f"inscene weights fetch {model}")
        else:
            infu = weights.locate(model, explicit, check_requires=False) / "infu_flux_v1.0" / self.stage
        paths = {
            "infusenet": infu / "InfuseNetModel",
            "image_proj": infu / "image_proj_model.bin",
            "flux": weights.locate("flux1-dev", self.flux_path, check_requires=False),
            "arcface": weights.locate("facexlib-arcface", self.arcface_path, check_requires=False),
        }
        if self.id_detector == "insightface":
            from inscene.faces.detectors import insightface_pack_dir

            paths["antelopev2"] = insightface_pack_dir("antelopev2", self.antelopev2_path)
        for i, (spec, _) in enumerate(self.lora_specs):
            paths[f"lora{i}"] = self._lora_file(spec)
        return paths

    @staticmethod
    def _lora_file(spec: str) -> Path:
        from inscene import weights

        if spec in weights.MODELS:
            return weights.locate_file(spec)
        path = Path(spec).expanduser()
        if not path.is_file():
            raise BadInputError(f"LoRA '{spec}' is neither an `inscene weights` name nor a file")
        return path

    def preflight(self) -> None:
        """Check that every weight file is there (cheap; raises MissingWeightsError)."""
        self.weight_paths()

    # ---- loading -----------------------------------------------------------------------------

    def _torch_device_dtype(self) -> tuple[Any, Any]:
        import torch

        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = self.dtype
        if dtype == "auto":
            dtype = "bfloat16" if str(device).startswith("cuda") else "float32"
        return torch.device(device), getattr(torch, dtype)

    def load(self) -> None:
        """Build the pipeline, resampler, ArcFace and reference detector (once per process)."""
        if self._state:
            return
        from inscene.runtime import cached_backend

        key = f"generator:{self!r}"  # every option (weights paths and LoRAs included)
        self._state = cached_backend(key, self._build)

    def _build(self) -> dict[str, Any]:
        paths = self.weight_paths()
        device, dtype = self._torch_device_dtype()
        _quiet_libraries()
        with warnings.catch_warnings():
            # diffusers 0.42 renames torch_dtype -> dtype; older releases only know torch_dtype
            warnings.simplefilter("ignore", FutureWarning)
            return self._assemble(paths, device, dtype)

    def _assemble(self, paths: dict[str, Path], device: Any, dtype: Any) -> dict[str, Any]:
        from diffusers import FluxControlNetModel, FluxControlNetPipeline

        from pipelines.generators.arcface_irse import load_arcface
        from pipelines.generators.resampler import load_image_proj

        try:
            infusenet = FluxControlNetModel.from_pretrained(paths["infusenet"], torch_dtype=dtype)
            pipe = FluxControlNetPipeline.from_pretrained(paths["flux"], controlnet=infusenet, torch_dtype=dtype)
        except (OSError, ValueError, RuntimeError) as exc:
            raise InsceneError(
                f"cannot load FLUX/InfuseNet from {paths['flux']} and {paths['infusenet']}: {exc}"
            ) from None
        pipe.set_progress_bar_config(disable=True)
        names, scales = [], []
        for i, (_, scale) in enumerate(self.lora_specs):
            pipe.load_lora_weights(str(paths[f"lora{i}"]), adapter_name=f"lora{i}")
            names.append(f"lora{i}")
            scales.append(scale)
        if names:
            pipe.set_adapters(names, adapter_weights=scales)
        if self.cpu_offload:
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
        resampler = load_image_proj(paths["image_proj"]).to(device=device, dtype=dtype)
        arcface = load_arcface(paths["arcface"]).to(device)
        return {
            "pipe": pipe, "resampler": resampler, "arcface": arcface, "device": device, "dtype": dtype,
            "detectors": self._id_detectors(paths.get("antelopev2")),
        }

    def _id_detectors(self, pack_dir: Path | None) -> list[Any]:
        from inscene.faces import create_detector

        if self.id_detector == "insightface":
            return [
                create_detector("insightface", pack="antelopev2", path=str(pack_dir), det_size=s,
                                select="largest", max_side=None)
                for s in ID_DET_SIZES
            ]
        return [create_detector(self.id_detector, select="largest")]

    # ---- generation --------------------------------------------------------------------------

    def identity_embedding(self, reference_rgb: np.ndarray) -> np.ndarray | None:
        """InfiniteYou's 512-D identity embedding of the largest face, or None without a face."""
        import torch

        from pipelines.generators.arcface_irse import arcface_crop, crop_to_tensor

        self.load()
        face = None
        for det in self._state["detectors"]:
            found = det.detect(reference_rgb, select="largest")
            if found:
                face = found[0]
                break
        if face is None:
            return None
        bgr = np.ascontiguousarray(np.asarray(reference_rgb)[:, :, ::-1])
        crop = arcface_crop(bgr, np.asarray(face.landmarks))
        with torch.no_grad():
            emb = self._state["arcface"](crop_to_tensor(crop).to(self._state["device"]))
        return emb[0].float().cpu().numpy()

    def condition(self, reference_rgb: np.ndarray) -> Any:
        """Identity tokens ``(1, N, D)`` (CPU float32) for one reference photo, or None."""
        import torch

        emb = self.identity_embedding(reference_rgb)
        if emb is None:
            return None
        st = self._state
        with torch.no_grad():
            x = torch.from_numpy(emb).reshape(1, 1, -1).to(st["device"], st["dtype"])
            tokens = st["resampler"](x)
        return tokens.float().cpu()

    def generate(self, prompts: list[str], conditions: list[Any], seeds: list[int]) -> list[np.ndarray]:
        """Generate one image per prompt/condition/seed (a batch through one pipeline call)."""
        import torch
        from PIL import Image

        if not (len(prompts) == len(conditions) == len(seeds)) or not prompts:
            raise BadInputError("generate needs as many prompts, conditions and seeds, at least one")
        self.load()
        st = self._state
        tokens = torch.cat([c.reshape(1, *c.shape[-2:]) for c in conditions], dim=0).to(st["device"], st["dtype"])
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        control = Image.new("RGB", (self.width, self.height))
        with torch.no_grad(), infuse_identity(st["pipe"].controlnet, tokens, self.infusenet_guidance):
            out = st["pipe"](
                prompt=list(prompts),
                control_image=control,
                width=self.width,
                height=self.height,
                num_inference_steps=self.steps,
                guidance_scale=self.guidance,
                controlnet_conditioning_scale=self.infusenet_scale,
                control_guidance_start=self.infusenet_start,
                control_guidance_end=self.infusenet_end,
                generator=generators,
                output_type="np",
                max_sequence_length=self.max_sequence_length,
            )
        images = np.asarray(out.images, dtype=np.float32)
        return [np.clip(np.rint(im * 255.0), 0, 255).astype(np.uint8) for im in images]

    # ---- records -----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Every option that shapes the images, plus the diffusers version."""
        from importlib.metadata import version

        return {
            "name": self.name, "version": self.version, "stage": self.stage, "width": self.width,
            "height": self.height, "steps": self.steps, "guidance": self.guidance,
            "infusenet_scale": self.infusenet_scale, "infusenet_start": self.infusenet_start,
            "infusenet_end": self.infusenet_end, "infusenet_guidance": self.infusenet_guidance,
            "dtype": self.dtype, "cpu_offload": self.cpu_offload, "max_sequence_length": self.max_sequence_length,
            "id_detector": self.id_detector, "control_image": "black", "diffusers": version("diffusers"),
        }

    def loras(self) -> list[dict[str, Any]]:
        """The LoRAs and their scales."""
        return [{"lora": os.path.basename(n), "scale": s} for n, s in self.lora_specs]
