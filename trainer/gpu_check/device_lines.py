"""The GPU check's lines about data, collectives, precision and the codec on a GPU."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from trainer.gpu_check.context import Context, group, last_line, photo, run, shards


def data_config(path: Path, patch: int, batch: int):
    from data_pipeline.data_config import DataConfig

    return DataConfig(
        shards=str(path), backend="dali", patch_size=patch, batch_size_per_gpu=batch,
        num_threads=4, shuffle_buffer=8, seed=0,
    )  # fmt: skip


def pil_reference(src: Path, key: str) -> torch.Tensor:
    """``(3, H, W)`` 0..255 pixels of source ``key`` by the project's rule (``load_rgb``: PIL)."""
    from jicd.codec.images import load_rgb

    (path,) = [p for p in src.iterdir() if p.stem == key]
    return load_rgb(str(path))[0] * 255


def check_dali_mixed(ctx: Context) -> str:
    """nvJPEG/nvJPEG2000 decoding on the GPU: shapes, range, keys, pixels vs PIL, held batches."""
    from data_pipeline.loaders import build_train_loader

    ctx.need_dali()
    info = group(ctx)
    kinds = ("jpg", "grey", "png", "rgba", "jp2")
    side = 128
    root = shards(ctx, "mixed", 20, side, kinds)
    loader = build_train_loader(data_config(root, side, 2), 0, 1, info.device)  # crop = image
    first = next(loader)
    held = (first["clean"].clone(), first["augmented"].clone())
    worst: dict[str, float] = {}
    # 18 training samples, batch 2: one epoch shows every one of them.
    for batch in [first, *(next(loader) for _ in range(loader.batches_per_epoch - 1))]:
        clean = batch["clean"]
        assert clean.shape == (2, 3, side, side) and clean.device.type == "cuda", clean.shape
        assert float(clean.min()) >= 0.0 and float(clean.max()) <= 1.0
        for image, key in zip(clean, batch["keys"], strict=True):
            kind = key[:-3]  # names are <kind><3-digit index>
            assert kind in kinds, f"unexpected key {key}"
            diff = float(
                (image.cpu() * 255 - pil_reference(root.parent / "images", key)).abs().max()
            )
            worst[kind] = max(worst.get(kind, 0.0), diff)
    # DALI hands out zero-copy outputs: the first batch must be unchanged after the others.
    kept = torch.equal(held[0], first["clean"]) and torch.equal(held[1], first["augmented"])
    assert kept, "a held batch was overwritten"
    assert set(worst) == set(kinds), f"formats seen: {sorted(worst)}"
    lossless = max(worst["png"], worst["rgba"], worst["jp2"])
    assert lossless < 0.51, worst  # PNG (CPU) and lossless JPEG 2000 (nvJPEG2000): exact
    assert max(worst.values()) <= 8.0, worst  # nvJPEG's IDCT vs libjpeg: a few levels at most
    return "max |DALI - PIL| (8-bit levels): " + ", ".join(f"{k} {v:.1f}" for k, v in worst.items())


def check_dali_resume(ctx: Context) -> str:
    """A mixed-pipeline state restored mid-epoch gives the same next batches across the boundary."""
    from data_pipeline.loaders import build_train_loader

    ctx.need_dali()
    info = group(ctx)
    root = shards(ctx, "resume", 10, 96, ("jpg", "png"))
    cfg = data_config(root, 64, 2)
    first = build_train_loader(cfg, 0, 1, info.device)
    per_epoch = first.batches_per_epoch
    for _ in range(per_epoch - 1):
        next(first)
    state = first.state_dict()
    assert state.get("decoder") == "mixed", state.get("decoder")
    expected = [next(first) for _ in range(3)]  # crosses into the next epoch
    second = build_train_loader(cfg, 0, 1, info.device)
    second.load_state_dict(state)
    got = [next(second) for _ in range(3)]
    diff = max(
        float((a["clean"] - b["clean"]).abs().max()) for a, b in zip(expected, got, strict=True)
    )
    assert [a["keys"] for a in expected] == [b["keys"] for b in got], "other samples"
    assert diff == 0.0, f"max |difference| {diff}"
    return f"{per_epoch} batches/epoch; resumed at batch {per_epoch - 1}: 3 batches identical"


def check_nt_xent_nccl(ctx: Context) -> str:
    """The all-gather with gradients on NCCL, 2 ranks, equals one process on the whole batch."""
    ctx.need_gpus(2)
    out = ctx.folder("nt_xent")
    done = run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "-m", "trainer.gpu_check.nt_xent_worker", str(out)],
        timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, last_line(done.stderr)
    report = json.loads((out / "nt_xent.json").read_text())
    fp32, bf16 = report["torch.float32"], report["torch.bfloat16"]
    assert fp32["loss"] < 1e-5 and fp32["grad"] < 1e-5, report
    assert bf16["loss"] < 1e-2 and bf16["grad"] < 1e-2, report
    return (
        f"|Δloss| fp32 {fp32['loss']:.1e} bf16 {bf16['loss']:.1e}; "
        f"max |Δgrad| fp32 {fp32['grad']:.1e} bf16 {bf16['grad']:.1e}"
    )


EngineKind = Literal["deepspeed", "ddp"]


def probe_dtypes(kind: EngineKind, device: torch.device) -> dict[str, torch.dtype]:
    from jicd.models import build_model
    from trainer.engine import EngineConfig, autocast_context, build_engine
    from trainer.optim import OptimConfig, build_optimizer

    seen: dict[str, torch.dtype] = {}
    model = build_model("jicd", 1, channels=16).to(device)
    conv = next(m for m in model.ga0.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda _m, _i, out: seen.setdefault("conv", out.dtype) and None)
    cfg = EngineConfig(kind=kind, precision="bf16-autocast")
    engine = build_engine(model, build_optimizer(model, OptimConfig()), cfg, 1.0, 2)
    conditional: Any = engine.module.gaussian_conditional  # CompressAI's GaussianConditional
    quantize = conditional.quantize
    conditional.quantize = lambda *a, **k: _seen(seen, quantize(*a, **k))
    x = torch.rand(2, 3, 64, 64, device=device)
    with autocast_context(cfg, device):
        out = engine.forward(x, x, x)
    seen["likelihoods"] = out["likelihoods"]["y"].dtype
    return seen


def _seen(seen: dict, value: torch.Tensor) -> torch.Tensor:
    seen.setdefault("quantize", value.dtype)
    return value


def check_bf16(ctx: Context) -> str:
    """bf16-autocast really runs g_a in bf16 on CUDA (both engines); entropy models stay fp32."""
    info = group(ctx)
    kinds: tuple[EngineKind, ...] = ("ddp", "deepspeed")
    for kind in kinds:
        seen = probe_dtypes(kind, info.device)
        expected = {"conv": torch.bfloat16, "quantize": torch.float32, "likelihoods": torch.float32}
        assert seen == expected, f"{kind}: {seen}"
    return "g_a conv bf16, quantisation + likelihoods fp32, under DDP and DeepSpeed"


def check_codec_gpu_to_cpu(ctx: Context) -> str:
    """A file encoded with a CUDA model decodes on the CPU (entropy parameters computed there)."""
    from compressai.models import Cheng2020Anchor

    from jicd.codec import get_coder
    from jicd.errors import UserError
    from jicd.metrics import psnr

    ctx.need_gpus(1)
    torch.manual_seed(0)
    cpu_model = Cheng2020Anchor(128).eval()
    cpu_model.update(force=True)
    gpu_model = copy.deepcopy(cpu_model).cuda()
    x = torch.from_numpy(np.asarray(photo(256, 3))).permute(2, 0, 1)[None] / 255.0
    coder = get_coder("wavefront")
    on_gpu = coder.compress(gpu_model, x)
    on_cpu = coder.compress(cpu_model, x)
    decoded = coder.decompress(
        cpu_model, on_gpu["strings"], on_gpu["shape"], checks=on_gpu["checks"]
    )
    reference = coder.decompress(cpu_model, on_cpu["strings"], on_cpu["shape"])
    gpu_decoded = coder.decompress(
        gpu_model, on_gpu["strings"], on_gpu["shape"], checks=on_gpu["checks"]
    )
    close = float(psnr(decoded["x_hat"], reference["x_hat"]).mean())
    same_y = float(psnr(gpu_decoded["x_hat"], decoded["x_hat"]).mean())
    try:
        get_coder("serial").compress(gpu_model, x)
        raise AssertionError("the serial coder accepted a CUDA model")
    except UserError:
        pass
    assert close > 30 and same_y > 40, (close, same_y)
    size = len(on_gpu["strings"][0][0]) + len(on_gpu["strings"][1][0])
    return (
        f"{size} B; CPU decode of the GPU file vs CPU-encoded: {close:.1f} dB; GPU vs CPU decode "
        f"of it: {same_y:.1f} dB; serial refuses CUDA"
    )


def check_integer_codec_exact(ctx: Context) -> str:
    """The integer entropy path derives the same integers on the GPU and the CPU: a file encoded
    on either decodes on the other to the encoder's exact latent (docs/integer-entropy.md)."""
    from compressai.models import Cheng2020Anchor

    from jicd.codec.integer.calibration import generated_images, noisy_versions
    from jicd.codec.integer.convert import integerize
    from jicd.codec.integer.isa_check import cross_device_round_trip

    ctx.need_gpus(1)
    torch.manual_seed(0)
    model = Cheng2020Anchor(128).eval()
    x = torch.from_numpy(np.asarray(photo(256, 3))).permute(2, 0, 1)[None] / 255.0
    with torch.no_grad():  # a latent with many non-zero symbols, as a trained model has
        gain = 6.0 / float(model.g_a(x).std())
        model.g_a[-1].weight.mul_(gain)
        model.g_a[-1].bias.mul_(gain)
    model.update(force=True)
    model.integer_entropy = integerize(model, noisy_versions(generated_images(2, 128)))
    there = cross_device_round_trip(model, x, "cuda", "cpu")
    back = cross_device_round_trip(model, x, "cpu", "cuda")
    for result in (there, back):
        assert result["same_params"] and result["same_latent"] and result["indices"] > 3, result
    return f"{there['bytes']} B, {there['indices']} distinct indices; GPU->CPU and CPU->GPU exact"
