"""Restorer training in two processes (DDP over gloo on CPU), as `accelerate launch` runs it on GPUs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from tests.restorer.stage2_helpers import face_scenes, tiny_fadex, tiny_sd

SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from restorer.train_restorer import RestorerTrainConfig, run_training
sd, fadex, data, out = sys.argv[1:5]
cfg = RestorerTrainConfig(
    base=sd, fadex=fadex, mapnet_channels=32, mapnet_heads=8, vae_lora_rank=2, unet_lora_rank=2, iterations=2,
    batch_size=1, grad_accum=2, crop=32, lr=1e-3, warmup=0, save_every=1, log_every=1, loader_workers=0,
    pretrained_losses=False, dino_overrides={"embed_dim": 32, "depth": 4, "num_heads": 2, "img_size": 32},
    neg_prob=0.5,
)
res = run_training([data], out, cfg, cpu=True, resume=False)
print("STEPS", res.steps)
"""


@pytest.mark.slow
def test_two_processes_train_with_gradient_accumulation_and_the_gan(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(port), str(script), str(tiny_sd()), str(tiny_fadex()), str(face_scenes()), str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("STEPS 2") == 2  # both ranks finished the same steps
    assert "2 process(es)" in proc.stdout + proc.stderr and "effective batch 4" in proc.stdout + proc.stderr
    lines = [json.loads(x) for x in (out / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]  # one writer: the main process
    assert (out / "checkpoints" / "step-0000002.safetensors").is_file()
