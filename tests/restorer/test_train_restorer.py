"""Restorer training (Face2Scene §3.3, §4.1, §7.2) on tiny models through the real code paths."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from inscene.errors import BadInputError
from restorer.train_restorer import RestorerTrainer, SceneDataset, collate, run_training
from tests.restorer.stage2_helpers import (
    astronaut,
    astronaut_face,
    degrade,
    face_scenes,
    one_thread,
    scaled_face,
    scene_dataset,
    tiny_fadex_stride4,
    train_config,
    trained_run,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_dataset_samples_versions_and_builds_gt_face_pairs():
    ds = SceneDataset([scene_dataset()], crop=64, seed=3)
    assert [s.key for s in ds.scenes] == ["astro"] and ds.skipped == ["coffee"]  # no usable face: left out
    assert sorted(ds.scenes[0].versions) == [0, 1]
    assert len(SceneDataset([scene_dataset()], need_pairs=False)) == 2  # the no-token ablation uses every scene
    seen = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        item = ds[0]
        seen.add(item["version"])
        assert item["lq"].shape == item["hq"].shape == (3, 64, 64)
        assert item["pair_source"] == "gt"
        pair = item["pair"]
        assert pair.shape[0] == 6 and min(pair.shape[1:]) >= 16 and 0 <= pair.min() and pair.max() <= 1
        # the pair is (clean, degraded) crops of the same box: related, but not equal
        assert not torch.equal(pair[:3], pair[3:])
    assert seen == {0, 1}  # one of the K precomputed versions per visit (§4.1)
    batch = collate([ds[0], ds[0]])
    assert batch["lq"].shape == (2, 3, 64, 64) and len(batch["pairs"]) == 2


def test_one_step_runs_all_losses_and_updates_only_the_trainable_parts(tmp_path):
    trainer = RestorerTrainer([scene_dataset()], tmp_path / "run", train_config(neg_prob=0.0), cpu=True)
    model = trainer.model
    disc = trainer.raw_disc
    base_unet, base_vae = _snapshot(model.onestep.unet), _snapshot(model.onestep.vae)
    fadex, mapnet, dsnap = _snapshot(model.fadex), _snapshot(model.mapnet), _snapshot(disc)
    lp = _snapshot(trainer.lpips)
    batch = collate([trainer.dataset[0]])
    parts = trainer.train_batch(batch)
    assert set(parts) == {"l2", "lpips", "gan_g", "gan_d", "loss"}
    assert all(np.isfinite(v) for v in parts.values())

    def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
        now = module.state_dict()
        return {k for k, v in before.items() if not torch.equal(v, now[k])}

    unet_changed = changed(base_unet, model.onestep.unet)
    vae_changed = changed(base_vae, model.onestep.vae)
    assert unet_changed and all("lora_" in k or k.startswith("conv_in.") for k in unet_changed)
    assert any(k.startswith("conv_in.") for k in unet_changed)
    assert vae_changed and all("lora_" in k and k.startswith("encoder.") for k in vae_changed)
    assert changed(mapnet, model.mapnet) == set(mapnet)  # MapNet trains
    assert not changed(fadex, model.fadex)  # FaDeX is frozen (BatchNorm statistics included)
    d_changed = changed(dsnap, disc)
    assert d_changed and not any(k.startswith("backbone.") for k in d_changed)  # only the heads
    assert not changed(lp, trainer.lpips)


def test_overfitting_one_batch_lowers_the_reconstruction_loss(tmp_path):
    cfg = train_config(lambda_gan=0.0, neg_prob=0.0, lr=3e-3, batch_size=1)
    trainer = RestorerTrainer([scene_dataset()], tmp_path / "run", cfg, cpu=True)
    batch = collate([trainer.dataset[0]])
    torch.manual_seed(0)
    first = trainer.train_batch(batch)
    for _ in range(14):
        last = trainer.train_batch(batch)
    assert last["l2"] < 0.8 * first["l2"], (first, last)


def test_run_folder_checkpoints_logs_and_resume():
    run = trained_run()
    lines = [json.loads(x) for x in (run / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]
    assert {"l2", "lpips", "gan_g", "gan_d", "lr"} <= set(lines[-1])
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000001.safetensors",
                                                                      "step-0000002.safetensors"]
    assert (run / "face2scene.safetensors").read_bytes() == (run / "checkpoints/step-0000002.safetensors").read_bytes()
    from safetensors import safe_open

    with safe_open(str(run / "face2scene.safetensors"), framework="pt") as f:
        keys = list(f.keys())
        config = json.loads(f.metadata()["config"])
    # only what training produced or needs: LoRA, conv_in, MapNet, FaDeX; never the frozen base
    assert all(k.startswith(("onestep.unet.", "onestep.vae.", "mapnet.", "fadex.")) for k in keys)
    assert all("lora_" in k or k.startswith(("onestep.unet.conv_in.", "mapnet.", "fadex.")) for k in keys)
    assert config["onestep"]["vae_lora_rank"] == 4 and config["mapnet"]["num_tokens"] == 21
    assert config["cfg_scale"] == pytest.approx(1.10) and config["train"]["step"] == 2
    state = json.loads((run / "state/trainer_state.json").read_text())
    assert state["step"] == 2


def test_resume_continues_and_refuses_changed_settings(tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run(), run)
    res = run_training([scene_dataset()], run, train_config(iterations=3), cpu=True)
    assert res.steps == 3 and res.checkpoint.name == "step-0000003.safetensors"
    assert [json.loads(x)["step"] for x in (run / "loss.jsonl").read_text().splitlines()] == [1, 2, 3]
    with pytest.raises(BadInputError, match="settings differ.*unet_lora_rank"):
        RestorerTrainer([scene_dataset()], run, train_config(iterations=4, unet_lora_rank=8), cpu=True)


def test_checkpoint_reload_reproduces_outputs_bit_exactly():
    from restorer.model import Face2Scene

    run = trained_run()
    lq = degrade(astronaut(), 1.5, 4.0, 0)
    a = Face2Scene.from_checkpoint(run, ref_fr="passthrough", detector="dlib")
    b = Face2Scene.from_checkpoint(run / "checkpoints/step-0000002.safetensors", ref_fr="passthrough",
                                   detector="dlib")
    ra, rb = a.restore(lq), b.restore(lq)
    assert ra.face_found and ra.tokens == 21
    assert np.array_equal(ra.image, rb.image)
    # and the loaded trainable tensors are the saved ones, bit for bit
    from restorer.model import load_checkpoint

    state, _ = load_checkpoint(run)
    own = {f"onestep.{k}": v for k, v in a.onestep.trainable_state_dict().items()}
    assert all(torch.equal(own[k], state[k]) for k in own)


def test_bad_settings_are_one_clear_error(tmp_path):
    with pytest.raises(BadInputError, match="--fadex is required"):
        train_config(fadex=None).check()
    with pytest.raises(BadInputError, match="--tokens"):
        train_config(num_tokens=4).check()
    with pytest.raises(BadInputError, match="run `inscene degrade` first"):
        SceneDataset([tmp_path])


def test_grad_accum_discriminator_steps_on_the_mean_gradient_of_every_micro_batch(tmp_path):
    cfg = train_config(grad_accum=2, batch_size=1, iterations=1, neg_prob=0.0, lambda_lpips=0.0,
                       max_grad_norm=1e9)
    trainer = RestorerTrainer([face_scenes()], tmp_path / "run", cfg, resume=False, cpu=True)
    disc = trainer.raw_disc.eval()  # deterministic logits: no DiffAugment, no spectral-norm power iteration
    initial = copy.deepcopy(disc)
    preds, stepped = [], []
    forward = trainer.gen.forward

    def recording_forward(*args, **kwargs):
        out = forward(*args, **kwargs)
        preds.append(out.detach().clone())
        return out

    trainer.gen.forward = recording_forward
    trainer.opt_d.optimizer.register_step_pre_hook(
        lambda *_: stepped.append([p.grad.clone() for p in disc.head_parameters()]))
    batches = [collate([trainer.dataset[i]]) for i in (0, 1)]
    for batch in batches:
        trainer.train_batch(batch)
    assert len(stepped) == 1  # one discriminator step for the two micro-batches
    # what it should step on: the discriminator loss of both micro-batches (mean), nothing else
    for batch, pred in zip(batches, preds, strict=True):
        logits = initial(torch.cat([batch["hq"], pred]))
        ld = initial.loss([x[:1] for x in logits], True) + initial.loss([x[1:] for x in logits], False,
                                                                        weight=torch.ones(1))
        (cfg.lambda_gan * ld / cfg.grad_accum).backward()
    for got, want in zip(stepped[0], [p.grad for p in initial.head_parameters()], strict=True):
        torch.testing.assert_close(got, want)


def _small_face_scenes(root) -> object:
    """Training shards: the astronaut at 256 px (a 46 px face) and at 92 px (a 16.5 px face whose
    27 px pair box passes the paper's 16 px but gives a stride-4 FaDeX a 7x7 Z_face)."""
    import cv2

    from inscene import imageio
    from inscene.shards import ShardWriter, write_index

    with ShardWriter(root, "train", "synthetic") as w:
        for key, side in (("astro", 256), ("small", 92)):
            hq = cv2.resize(astronaut(), (side, side), interpolation=cv2.INTER_AREA)
            face = scaled_face(astronaut_face(), side / 256)
            w.write(key, {"hq.png": imageio.encode_image(hq, "png"),
                          "lq0.png": imageio.encode_image(degrade(hq, 1.0, 3.0, 0), "png")},
                    {"identity_id": "id0001", "faces": json.dumps([face.model_dump(mode="json")])})
    write_index(root)
    return root


def test_training_leaves_out_faces_below_the_fadex_minimum(tmp_path):
    data = _small_face_scenes(tmp_path / "scenes")
    assert len(SceneDataset([data], crop=64)) == 2  # both faces reach the paper's 16 px
    cfg = train_config(fadex=str(tiny_fadex_stride4()), iterations=1, lambda_lpips=0.0, lambda_gan=0.0)
    result = run_training([data], tmp_path / "run", cfg, cpu=True, resume=False)
    assert result.steps == 1 and result.skipped == 1  # the 16.5 px face is below the stride-4 FaDeX's 32 px
