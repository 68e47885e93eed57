"""Camera-pipeline (unprocessing) noise: invertibility, noise statistics, seeding, batching."""

from __future__ import annotations

import torch

from jicd.noise.unprocess import (
    TEST_CAMERA_SHOT,
    evaluation_camera,
    process,
    random_camera,
    unprocess,
    unprocess_noise,
)


def _images(batch: int = 4, side: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))


def test_process_inverts_unprocess_without_noise() -> None:
    clean = _images().double()
    camera = random_camera(4, torch.Generator().manual_seed(1))
    camera = type(camera)(*(getattr(camera, f).double() for f in camera.__dataclass_fields__))
    assert (process(unprocess(clean, camera), camera) - clean).abs().max() < 1e-4
    # float32, as training runs it
    camera32 = random_camera(4, torch.Generator().manual_seed(1))
    assert (process(unprocess(clean.float(), camera32), camera32) - clean).abs().max() < 1e-4


def test_raw_noise_follows_the_shot_read_variance() -> None:
    """A flat grey image, no mosaic: the raw-domain noise std is sqrt(shot·raw + read).

    Bright enough that no raw value crosses 0 (the pipeline clips negative raw values, as a
    camera does, which would bias the measured std)."""
    clean = torch.full((1, 3, 256, 256), 0.8)
    camera = evaluation_camera("unprocess-mid", 1)
    noisy = unprocess_noise(clean, torch.Generator().manual_seed(0), mosaic=False, camera=camera)
    raw_clean, raw_noisy = unprocess(clean, camera), unprocess(noisy, camera)
    for c in range(3):
        level = raw_clean[0, c, 0, 0]
        expected = torch.sqrt(camera.shot[0] * level + camera.read[0])
        measured = (raw_noisy[0, c] - raw_clean[0, c]).std()
        assert abs(measured / expected - 1) < 0.03, (c, float(measured), float(expected))


def test_seeded_and_per_image_cameras() -> None:
    clean = _images()
    first = unprocess_noise(clean, torch.Generator().manual_seed(7))
    assert torch.equal(first, unprocess_noise(clean, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, unprocess_noise(clean, torch.Generator().manual_seed(8)))
    cameras = random_camera(4, torch.Generator().manual_seed(7))
    assert len(set(cameras.red_gain.tolist())) == 4  # one camera per image of the batch
    assert first.shape == clean.shape and first.dtype == clean.dtype
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0


def test_evaluation_levels_grow_in_strength() -> None:
    # Smooth images: the mosaic/demosaic step itself costs little on them.
    clean = torch.nn.functional.interpolate(_images(2, 8), size=64, mode="bilinear")
    errors = []
    for name in TEST_CAMERA_SHOT:
        camera = evaluation_camera(name, 2)
        noisy = unprocess_noise(clean, torch.Generator().manual_seed(0), camera=camera)
        errors.append(float((noisy - clean).pow(2).mean()))
    assert errors == sorted(errors) and errors[0] > 0
