"""Generators of the synthetic subset (§6.1): InfiniteYou on diffusers through its real loading path.

The InfiniteYou test weights are tiny random models saved in the real layouts (FLUX.1-dev diffusers
folders with a sharded transformer; InfiniteYou's ``infu_flux_v1.0/sim_stage1`` with a sharded
InfuseNet and ``image_proj_model.bin``; facexlib's ArcFace ``.pth``) and read back by the code that
reads the real weights. The one boundary replaced is InfiniteYou's reference-face detector
(insightface antelopev2, an ONNX pack no library can build tiny): the tests detect with dlib.
"""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from inscene.errors import BadInputError, InsceneError, MissingWeightsError
from pipelines.generators import create_generator, list_generators
from pipelines.generators.arcface_irse import IRSE50_STAGES, IRSEBackbone, load_arcface
from pipelines.generators.infiniteyou import infuse_identity, parse_lora
from pipelines.generators.resampler import INFINITEYOU_RESAMPLER, IdentityResampler, load_image_proj
from pipelines.generators.tiny import make_tiny_infiniteyou, make_tiny_lora

PROMPT = "A full-body photo of a person standing. They smile. The background is a park. It is sharp."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_infiniteyou(tmp_path_factory.mktemp("tiny-weights"))


def _tiny_gen(tiny, **kw):
    opts = dict(
        width=64, height=64, steps=2, lora_specs=(), id_detector="dlib", max_sequence_length=64, device="cpu",
        flux_path=str(tiny["flux"]), infiniteyou_path=str(tiny["infiniteyou"]), arcface_path=str(tiny["arcface"]),
    )
    opts.update(kw)
    return create_generator("infiniteyou", **opts)


@pytest.fixture(scope="module")
def gen(tiny):
    g = _tiny_gen(tiny)
    g.load()
    return g


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def cond(gen, astronaut):
    return gen.condition(astronaut)


def test_registry_names_and_bad_options():
    assert {"infiniteyou", "infiniteyou-tiny", "compose"} <= set(list_generators())
    with pytest.raises(BadInputError, match="unknown generator"):
        create_generator("no-such")
    with pytest.raises(BadInputError, match="compose"):
        create_generator("compose", steps=3)
    with pytest.raises(BadInputError, match="multiples of 16"):
        create_generator("infiniteyou", width=100)


def test_tiny_weights_are_in_the_layout_inscene_weights_expects(tiny):
    from inscene import weights

    assert weights.locate("flux1-dev", tiny["flux"], check_requires=False) == tiny["flux"]
    assert weights.locate("infiniteyou", tiny["infiniteyou"], check_requires=False) == tiny["infiniteyou"]
    assert weights.locate("facexlib-arcface", tiny["arcface"], check_requires=False) == tiny["arcface"]
    # sharded like the real checkpoints: an index plus several shard files
    for folder in (tiny["flux"] / "transformer", tiny["stage"] / "InfuseNetModel"):
        assert (folder / "diffusion_pytorch_model.safetensors.index.json").is_file()
        assert len(list(folder.glob("diffusion_pytorch_model-*.safetensors"))) > 1


def test_generation_is_deterministic_in_the_seed(gen, cond):
    assert tuple(cond.shape) == (1, 8, 32)  # 8 identity tokens of the ControlNet's text width
    a, b = gen.generate([PROMPT, PROMPT], [cond, cond], [7, 8])
    again = gen.generate([PROMPT], [cond], [7])[0]
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    # an image depends on its own seed only, not on its batch (1 LSB of float rounding allowed)
    assert np.abs(again.astype(int) - a.astype(int)).max() <= 1
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 1


def test_identity_tokens_replace_the_text_stream_of_infusenet(gen, cond, astronaut):
    seen = {}

    def spy(module, args, kwargs):
        seen.update(ehs=kwargs["encoder_hidden_states"].clone(), ids=kwargs["txt_ids"].clone(),
                    guidance=None if kwargs.get("guidance") is None else kwargs["guidance"].clone())

    controlnet = gen._state["pipe"].controlnet
    with infuse_identity(controlnet, cond, 1.0):
        handle = controlnet.register_forward_pre_hook(spy, with_kwargs=True)  # runs after ours
        try:
            gen._state["pipe"](prompt=[PROMPT], control_image=np.zeros((64, 64, 3), np.uint8), width=64, height=64,
                               num_inference_steps=1, max_sequence_length=64, output_type="np")
        finally:
            handle.remove()
    assert torch.equal(seen["ehs"], cond.to(seen["ehs"].dtype))
    assert seen["ids"].shape == (8, 3) and not seen["ids"].any()
    assert torch.all(seen["guidance"] == 1.0)
    # a different identity changes the image; the hook is gone after the call
    other = gen.condition(np.ascontiguousarray(astronaut[:, ::-1])) * -1
    x = gen.generate([PROMPT], [cond], [3])[0]
    y = gen.generate([PROMPT], [other], [3])[0]
    assert np.abs(x.astype(int) - y.astype(int)).mean() > 0.02  # tiny random nets: small but real
    assert not controlnet._forward_pre_hooks


def test_lora_is_loaded_and_changes_the_image(tiny, cond, tmp_path):
    lora = make_tiny_lora(tiny["flux"], tmp_path / "lora" / "tiny_lora.safetensors")
    plain = _tiny_gen(tiny).generate([PROMPT], [cond], [5])[0]
    with_lora = _tiny_gen(tiny, lora_specs=((str(lora), 1.0),))
    out = with_lora.generate([PROMPT], [cond], [5])[0]
    assert np.abs(out.astype(int) - plain.astype(int)).mean() > 0.05
    assert with_lora.loras() == [{"lora": "tiny_lora.safetensors", "scale": 1.0}]


def test_reference_without_a_face_gives_no_condition(gen):
    assert gen.condition(skimage.data.coffee()) is None


def test_missing_weights_name_the_file_and_the_fetch_command(tmp_path, monkeypatch):
    for var in ("INSCENE_HOME", "HF_HOME", "HF_HUB_CACHE", "TORCH_HOME", "INSIGHTFACE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(MissingWeightsError) as err:
        create_generator("infiniteyou").preflight()
    msg = str(err.value)
    assert "image_proj_model.bin" in msg and "inscene weights fetch infiniteyou" in msg and "\n" not in msg


def test_lora_specs_parse():
    assert parse_lora("antiblur-lora") == ("antiblur-lora", 1.0)
    assert parse_lora("antiblur-lora:1.3") == ("antiblur-lora", 1.3)
    assert parse_lora("/w/my:lora.safetensors") == ("/w/my:lora.safetensors", 1.0)


def test_resampler_has_infiniteyou_shapes_and_loads_strictly(tmp_path):
    with torch.device("meta"):
        full = IdentityResampler(**INFINITEYOU_RESAMPLER)
    assert tuple(full.latents.shape) == (1, 8, 1280) and full.proj_out.out_features == 4096
    small = IdentityResampler(dim=32, depth=2, dim_head=16, heads=2, num_queries=4, embedding_dim=12, output_dim=24)
    torch.save({"image_proj": small.state_dict()}, tmp_path / "image_proj_model.bin")
    back = load_image_proj(tmp_path / "image_proj_model.bin", dim_head=16)
    x = torch.randn(3, 1, 12)
    assert back.config == small.config and torch.allclose(back(x), small.eval()(x))
    assert back(x).shape == (3, 4, 24)
    state = small.state_dict()
    state.pop("norm_out.weight")
    torch.save({"image_proj": state}, tmp_path / "broken.bin")
    with pytest.raises(InsceneError, match="does not match"):
        load_image_proj(tmp_path / "broken.bin", dim_head=16)


def test_checkpoints_with_pickled_objects_are_refused(tmp_path):
    torch.save({"image_proj": {"x": torch.zeros(1)}, "payload": BadInputError("pickled object")}, tmp_path / "p.bin")
    with pytest.raises(InsceneError, match="tensors-only"):
        load_image_proj(tmp_path / "p.bin")


def test_arcface_layout_is_read_from_the_checkpoint(tmp_path):
    with torch.device("meta"):
        full = IRSEBackbone()
    assert IRSEBackbone.layout(full.state_dict()) == {
        "stages": IRSE50_STAGES, "stem": 64, "embedding_dim": 512, "se_ratio": 16,
    }
    small = IRSEBackbone(stages=((16, 2), (32, 1), (48, 1), (64, 2)), stem=16, embedding_dim=20).eval()
    torch.save(small.state_dict(), tmp_path / "arc.pth")
    back = load_arcface(tmp_path / "arc.pth")
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    emb = back(x)
    assert emb.shape == (2, 20) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(emb, small(x), atol=1e-6)


def test_compose_is_deterministic_and_keeps_the_identity(astronaut):
    from inscene.faces import create_detector, create_embedder

    gen = create_generator("compose")
    face = gen.condition(astronaut)
    a = gen.generate(["A person in a red dress. They smile. The background is a park. Sharp."], [face], [11])[0]
    b = gen.generate(["A person in a red dress. They smile. The background is a park. Sharp."], [face], [11])[0]
    assert a.shape == (640, 512, 3) and np.array_equal(a, b)
    det, emb = create_detector("dlib"), create_embedder("dlib")
    ref = emb.embed(astronaut, det.detect(astronaut, select="largest")[0])
    found = det.detect(a, select="largest")
    assert found and emb.similarity(emb.embed(a, found[0]), ref).max >= emb.threshold
    assert gen.condition(skimage.data.coffee()) is None
