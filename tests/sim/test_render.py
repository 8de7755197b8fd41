"""Tests for jelm.sim.render: PNG stills, rollout GIFs, contact sheets, degenerate inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image, ImageSequence

from jelm.domains.sodarace.seeds import seed_walker
from jelm.sim import terrain as terrains
from jelm.sim.render import (
    BACKGROUND,
    BONE_COLOR,
    CEILING_COLOR,
    GROUND_COLOR,
    JOINT_COLOR,
    MUSCLE_COLOR,
    WALL_COLOR,
    render_grid,
    render_rollout,
    render_walker,
)
from tests.sim.helpers import SEED_NAMES, SEEDS


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.int16)


def _mask(pixels: np.ndarray, color: tuple[int, int, int], tol: int = 0) -> np.ndarray:
    """Pixels within ``tol`` of ``color`` in every channel."""
    return np.all(np.abs(pixels - np.asarray(color, dtype=np.int16)) <= tol, axis=-1)


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    assert xs.size, "no pixels of the colour"
    return float(xs.mean()), float(ys.mean())


@pytest.fixture(scope="module")
def square() -> dict:
    return SEEDS["square"]


def _translated(walker: dict, frames: int = 20, distance: float = 6.0) -> np.ndarray:
    """(T, n, 2): the walker's joints moved steadily +x by ``distance`` units."""
    joints = np.asarray(walker["joints"], dtype=np.float64)
    shift = np.linspace(0.0, distance, frames)
    traj = np.repeat(joints[None], frames, axis=0)
    traj[:, :, 0] += shift[:, None]
    return traj


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_png_opens_with_size_and_content(name, tmp_path):
    path = tmp_path / f"{name}.png"
    returned = render_walker(SEEDS[name], path, size=(320, 240))
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == (320, 240)
        px = _rgb(im)
    assert np.array_equal(px, _rgb(returned))
    assert _mask(px, MUSCLE_COLOR).sum() > 20
    assert _mask(px, BONE_COLOR).sum() > 20
    assert _mask(px, JOINT_COLOR).sum() > 10
    assert _mask(px, BACKGROUND).mean() > 0.3  # fitted with a margin, not flooded


def test_accepts_object_with_to_dict(tmp_path):
    img = render_walker(seed_walker("radial"), size=(200, 150))
    assert img.size == (200, 150)
    assert _mask(_rgb(img), MUSCLE_COLOR).any()


def test_equal_aspect_ratio_and_margin(square):
    """A 10 x 10 square stays square in a 4:3 image and sits inside the margin."""
    px = _rgb(render_walker(square, size=(480, 360)))
    ys, xs = np.nonzero(_mask(px, JOINT_COLOR))
    width, height = xs.max() - xs.min(), ys.max() - ys.min()
    assert abs(width - height) <= 2
    assert ys.min() > 10 and ys.max() < 350
    assert abs((xs.min() + xs.max()) / 2 - 240) <= 2  # centred


def test_y_is_up():
    """A joint at larger y is drawn nearer the top of the image."""
    walker = {
        "joints": [[0.0, 0.0], [0.0, 10.0], [3.0, 10.0]],
        "muscles": [
            [0, 1, {"type": "distance", "amplitude": 0.0, "phase": 0.0}],
            [1, 2, {"type": "muscle", "amplitude": 5.0, "phase": 0.0}],
        ],
    }
    px = _rgb(render_walker(walker, size=(300, 300)))
    _, muscle_y = _centroid(_mask(px, MUSCLE_COLOR))
    _, bone_y = _centroid(_mask(px, BONE_COLOR))
    assert muscle_y < bone_y  # the muscle joins the two upper joints


def test_muscle_width_grows_with_amplitude():
    def muscle_pixels(amplitude: float) -> int:
        walker = {
            "joints": [[0.0, 0.0], [10.0, 0.0]],
            "muscles": [[0, 1, {"type": "muscle", "amplitude": amplitude, "phase": 0.0}]],
        }
        return int(_mask(_rgb(render_walker(walker, size=(400, 300))), MUSCLE_COLOR).sum())

    assert muscle_pixels(10.0) > 2 * muscle_pixels(1.0) > 0
    assert muscle_pixels(-10.0) == muscle_pixels(10.0)


def test_tunnel_ceiling_in_top_region(square, tmp_path):
    path = tmp_path / "tunnel.png"
    render_walker(square, path, terrain=terrains.tunnel(clearance=6.0))
    px = _rgb(Image.open(path))
    top = px[: px.shape[0] // 4]
    bottom = px[-px.shape[0] // 10 :]
    assert _mask(top, CEILING_COLOR).mean() > 0.2
    assert _mask(bottom, GROUND_COLOR).mean() > 0.5
    assert not _mask(bottom, CEILING_COLOR).any()
    # Without a terrain there is neither ground nor ceiling.
    bare = _rgb(render_walker(square))
    assert not _mask(bare, CEILING_COLOR).any() and not _mask(bare, GROUND_COLOR).any()


def test_flat_terrain_has_no_ceiling_and_walls_fill_their_side(square):
    px = _rgb(render_walker(square, terrain=terrains.flat()))
    assert not _mask(px, CEILING_COLOR).any()
    assert _mask(px, GROUND_COLOR).any()
    joints = np.asarray(square["joints"]) + np.array([0.5, 0.0])  # placed as left_wall() places it
    px = _rgb(render_walker(square, terrain=terrains.left_wall(), joints=joints))
    wall = _mask(px, WALL_COLOR)
    assert wall[:, :20].mean() > 0.9 and not wall[:, -20:].any()


def test_joints_override_moves_the_drawing_and_ignores_padding(square):
    joints = np.asarray(square["joints"], dtype=np.float64)
    padded = np.vstack([joints * [1.0, 0.3], np.full((11, 2), 99.0)])  # squashed, padded
    px = _rgb(render_walker(square, joints=padded, size=(480, 360)))
    ys, xs = np.nonzero(_mask(px, JOINT_COLOR))
    assert (xs.max() - xs.min()) > 2.5 * (ys.max() - ys.min())
    with pytest.raises(ValueError, match="joints"):
        render_walker(square, joints=joints[:3])


def test_degenerate_walkers_render(tmp_path):
    one = {"joints": [[1.0, 2.0]], "muscles": []}
    img = render_walker(one, tmp_path / "one.png", size=(100, 80))
    assert img.size == (100, 80) and _mask(_rgb(img), JOINT_COLOR).any()
    same = {
        "joints": [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
        "muscles": [
            [0, 1, {"type": "muscle", "amplitude": 3.0, "phase": 0.0}],
            [1, 2, {"type": "distance", "amplitude": 0.0, "phase": 0.0}],
        ],
    }
    assert _mask(_rgb(render_walker(same)), JOINT_COLOR).any()
    empty = render_walker({"joints": [], "muscles": []}, size=(120, 90))
    assert empty.size == (120, 90)
    nan_joint = {
        "joints": [[0.0, 0.0], [float("nan"), 1.0], [4.0, 0.0]],
        "muscles": [[0, 1, {"type": "muscle", "amplitude": 5.0, "phase": 0.0}]],
    }
    px = _rgb(render_walker(nan_joint))
    assert _mask(px, JOINT_COLOR).any() and not _mask(px, MUSCLE_COLOR).any()


def test_rollout_gif_frame_count_and_timing(square, tmp_path):
    path = tmp_path / "roll.gif"
    render_rollout(square, _translated(square), path, terrain=terrains.flat(), fps=25)
    with Image.open(path) as im:
        assert im.format == "GIF"
        assert im.n_frames == 20
        assert im.size == (480, 360)
        assert im.info["duration"] == 40
        assert im.mode == "P"
    assert path.stat().st_size < 20 * 480 * 360 // 4  # palette + compression, not raw RGB


def test_rollout_fixed_view_walker_moves_right(square, tmp_path):
    path = tmp_path / "fixed.gif"
    render_rollout(square, _translated(square, distance=8.0), path, follow=False)
    with Image.open(path) as im:
        frames = [_rgb(f) for f in ImageSequence.Iterator(im)]
    assert len(frames) == 20
    x_first, y_first = _centroid(_mask(frames[0], MUSCLE_COLOR, tol=12))
    x_last, y_last = _centroid(_mask(frames[-1], MUSCLE_COLOR, tol=12))
    assert x_last - x_first > 100  # 8 units of an 18-unit-wide view
    assert abs(y_last - y_first) < 3


def test_rollout_follow_keeps_walker_centred(square, tmp_path):
    path = tmp_path / "follow.gif"
    render_rollout(square, _translated(square, distance=30.0), path, follow=True)
    with Image.open(path) as im:
        frames = [_rgb(f) for f in ImageSequence.Iterator(im)]
    xs = [_centroid(_mask(f, MUSCLE_COLOR, tol=12))[0] for f in frames]
    joint_px = [_mask(f, JOINT_COLOR, tol=12).sum() for f in frames]
    assert max(xs) - min(xs) < 3  # camera tracks the COM
    assert max(joint_px) - min(joint_px) <= 0.1 * max(joint_px)  # fixed zoom: no pulsing


def test_rollout_uses_first_n_joints_and_stride(square, tmp_path):
    traj = _translated(square)
    padded = np.concatenate([traj, np.full((20, 7, 2), 1e3)], axis=1)
    path = tmp_path / "stride.gif"
    render_rollout(square, padded, path, stride=3, follow=False)
    with Image.open(path) as im:
        assert im.n_frames == 7  # rows 0, 3, ..., 18
        first = _rgb(im)
    # The padding joints at (1000, 1000) did not stretch the view: the walker is large.
    _, xs = np.nonzero(_mask(first, JOINT_COLOR, tol=12))
    assert xs.max() - xs.min() > 100


def test_rollout_empty_trajectory_raises(square, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        render_rollout(square, np.zeros((0, 5, 2)), tmp_path / "x.gif")
    with pytest.raises(ValueError, match=r"\(T, J, 2\)"):
        render_rollout(square, np.zeros((5, 2)), tmp_path / "x.gif")
    with pytest.raises(ValueError, match="joints"):
        render_rollout(square, np.zeros((4, 3, 2)), tmp_path / "x.gif")
    assert not (tmp_path / "x.gif").exists()


def test_rollout_nan_frames_do_not_crash(square, tmp_path):
    traj = _translated(square)
    traj[5, 2] = np.nan  # one joint lost
    traj[9] = np.nan  # the whole walker lost
    traj[12, :, 1] = np.inf
    path = tmp_path / "nan.gif"
    with pytest.warns(RuntimeWarning, match="3 of 20 frames"):
        render_rollout(square, traj, path, terrain=terrains.hills())
    with Image.open(path) as im:
        assert im.n_frames == 20
        im.seek(9)
        lost = _rgb(im)
        im.seek(10)
        back = _rgb(im)
    assert not _mask(lost, JOINT_COLOR, tol=12).any()
    assert _mask(back, JOINT_COLOR, tol=12).any()
    all_nan = np.full((4, 5, 2), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        render_rollout(square, all_nan, tmp_path / "all_nan.gif", follow=False)
    assert Image.open(tmp_path / "all_nan.gif").n_frames == 4


def test_grid_contact_sheet(tmp_path):
    walkers = list(SEEDS.values())
    path = tmp_path / "grid.png"
    sheet = render_grid(walkers, path, cols=4, titles=list(SEED_NAMES), size=(160, 120))
    assert sheet.size == (4 * 160, 2 * 120)
    with Image.open(path) as im:
        assert im.size == sheet.size
        px = _rgb(im)
    for k in range(len(walkers)):
        r, c = divmod(k, 4)
        tile = px[r * 120 : (r + 1) * 120, c * 160 : (c + 1) * 160]
        assert _mask(tile, JOINT_COLOR).any()
    empty_slot = px[120:240, 480:640]
    assert not _mask(empty_slot, JOINT_COLOR).any()
    assert render_grid(walkers[:2], None, cols=4).size == (2 * 240, 180)
    with pytest.raises(ValueError, match="at least one walker"):
        render_grid([], None)
    with pytest.raises(ValueError, match="titles"):
        render_grid(walkers, None, titles=["a"])
