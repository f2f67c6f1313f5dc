from __future__ import annotations

import numpy as np

from iclight.imaging.normals import normal_map, ratio


def _decode(img: np.ndarray) -> np.ndarray:
    return (img.astype(np.float32) - 127.5) / 127.5


def test_ratio_of_equal_images_is_zero() -> None:
    x = np.full((2, 2, 3), 0.4, np.float32)
    assert np.allclose(ratio(x, x), 0.0)


def test_nine_outputs_in_order() -> None:
    rng = np.random.default_rng(0)
    lights = [rng.random((16, 24, 3), dtype=np.float32) for _ in range(4)]
    out = normal_map(*lights, np.ones((16, 24, 1), np.float32))
    assert len(out) == 9 and all(o.shape == (16, 24, 3) and o.dtype == np.uint8 for o in out)
    # the last four are the relightings mapped to [-1, 1] and back
    assert np.abs(out[5].astype(int) - (lights[0] * 255).astype(int)).max() <= 1


def test_flat_lighting_faces_the_camera() -> None:
    flat = np.full((8, 8, 3), 0.5, np.float32)
    normal = _decode(normal_map(flat, flat, flat, flat, np.ones((8, 8, 1), np.float32))[0])
    assert np.allclose(normal[..., :2], 0, atol=0.01) and np.allclose(normal[..., 2], 1, atol=0.01)


def test_light_from_the_right_tilts_the_normal_right_and_up_tilts_up() -> None:
    dim, bright = np.full((8, 8, 3), 0.3, np.float32), np.full((8, 8, 3), 0.6, np.float32)
    m = np.ones((8, 8, 1), np.float32)
    n = _decode(normal_map(dim, bright, dim, dim, m)[0])  # right relighting brighter
    assert n[..., 0].mean() > 0.1 and abs(n[..., 1].mean()) < 0.01
    n = _decode(normal_map(dim, dim, dim, bright, m)[0])  # top relighting brighter
    assert n[..., 1].mean() > 0.1


def test_outside_the_matte_is_flat() -> None:
    dim, bright = np.full((8, 8, 3), 0.3, np.float32), np.full((8, 8, 3), 0.6, np.float32)
    normal = _decode(normal_map(dim, bright, dim, dim, np.zeros((8, 8, 1), np.float32))[0])
    assert np.allclose(normal[..., 0], 0, atol=0.01) and np.allclose(normal[..., 2], 1, atol=0.01)


def test_unit_length_inside_the_matte() -> None:
    rng = np.random.default_rng(1)
    lights = [rng.uniform(0.2, 0.8, (8, 8, 3)).astype(np.float32) for _ in range(4)]
    n = _decode(normal_map(*lights, np.ones((8, 8, 1), np.float32))[0])
    assert np.allclose(np.linalg.norm(n, axis=2), 1.0, atol=0.02)
