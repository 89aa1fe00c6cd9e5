"""Tests for PASegLib.seeds.geodesic: the raster scan against exact Dijkstra, hand values, errors, GeodisTK."""

import numpy as np
import pytest

from PASegLib.seeds import geodesic
from PASegLib.seeds.geodesic import geodesic_distance, seeds_from_points
from PASegLib.seeds.geodesic_reference import dijkstra_geodesic_distance

RTOL, ATOL = 1e-5, 1e-6


def _random_case(shape, seed=0, channels=None):
    rng = np.random.default_rng(seed)
    image = rng.random(shape if channels is None else (channels, *shape))
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(rng.integers(0, n) for n in shape)] = True
    return image, mask


def _maze(corridors=7, length=9):
    """(1, 2 * corridors - 1, length) serpentine: corridors (0) along k, walls (1000) with alternating gaps."""
    image = np.full((1, 2 * corridors - 1, length), 1000.0)
    image[0, ::2, :] = 0.0
    for wall in range(corridors - 1):
        image[0, 2 * wall + 1, length - 1 if wall % 2 == 0 else 0] = 0.0
    mask = np.zeros(image.shape, dtype=bool)
    mask[0, 0, 0] = True
    return image, mask


@pytest.mark.parametrize("lamb", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 1.3, 2.5)])
@pytest.mark.parametrize("shape,seed", [((6, 7, 8), 0), ((9, 4, 5), 1), ((3, 10, 2), 2), ((1, 6, 7), 3)])
def test_matches_dijkstra(shape, seed, spacing, lamb):
    image, mask = _random_case(shape, seed)
    expected = dijkstra_geodesic_distance(image, mask, spacing=spacing, lamb=lamb)
    dist = geodesic_distance(image, mask, spacing=spacing, lamb=lamb)
    assert dist.dtype == np.float32 and dist.shape == shape
    np.testing.assert_allclose(dist, expected, rtol=RTOL, atol=ATOL)


def test_multichannel_and_multiple_seeds_match_dijkstra():
    image, _ = _random_case((7, 6, 5), seed=4, channels=3)
    image *= np.array([1.0, 10.0, 100.0])[:, None, None, None]  # the channel norm must weigh all three
    points = [(0, 0, 0), (6, 5, 4), (3, 2, 1)]
    expected = dijkstra_geodesic_distance(image, points, spacing=(1.0, 2.0, 0.5), lamb=0.5)
    dist = geodesic_distance(image, points, spacing=(1.0, 2.0, 0.5), lamb=0.5)
    np.testing.assert_allclose(dist, expected, rtol=RTOL, atol=ATOL)
    for p in points:
        assert dist[p] == 0.0
    single = geodesic_distance(image[:1], seeds_from_points(points, (7, 6, 5)), spacing=(1.0, 2.0, 0.5))
    np.testing.assert_allclose(single, geodesic_distance(image[0], np.array(points), spacing=(1.0, 2.0, 0.5)))


def test_seed_forms_are_equivalent():
    image, _ = _random_case((5, 6, 7), seed=5)
    mask = np.zeros((5, 6, 7), dtype=np.uint8)
    mask[1, 2, 3] = 1
    ref = geodesic_distance(image, mask.astype(bool))
    for seeds in (mask, [(1, 2, 3)], (1, 2, 3), np.array([[1, 2, 3]])):
        np.testing.assert_array_equal(geodesic_distance(image, seeds), ref)
    np.testing.assert_array_equal(seeds_from_points([(1, 2, 3)], (5, 6, 7)), mask.astype(bool))


def test_hand_computed_line():
    # 1 x 1 x 5 line, intensities 0 1 1 3 0, spacing 2 mm along k, seed at k = 0.
    image = np.array([0.0, 1.0, 1.0, 3.0, 0.0]).reshape(1, 1, 5)
    seed = [(0, 0, 0)]
    spacing = (1.0, 1.0, 2.0)
    d0 = geodesic_distance(image, seed, spacing=spacing, lamb=0.0)  # each step costs s = 2
    np.testing.assert_allclose(d0.ravel(), [0.0, 2.0, 4.0, 6.0, 8.0], rtol=RTOL)
    d1 = geodesic_distance(image, seed, spacing=spacing, lamb=1.0)  # each step costs 2 * (|dI| + 1e-5)
    np.testing.assert_allclose(d1.ravel(), [0.0, 2.00002, 2.00004, 6.00006, 12.00008], rtol=RTOL)
    # lamb = 0.5: step = 2 / (0.5 + 0.5 / (|dI| + 1e-5)) for |dI| = 1, 0, 2, 3
    steps = [
        2 / (0.5 + 0.5 / 1.00001),
        2 / (0.5 + 0.5 / 1e-5),
        2 / (0.5 + 0.5 / 2.00001),
        2 / (0.5 + 0.5 / 3.00001),
    ]
    d5 = geodesic_distance(image, seed, spacing=spacing, lamb=0.5)
    np.testing.assert_allclose(d5.ravel(), np.cumsum([0.0, *steps]), rtol=RTOL)
    # two seeds: each voxel takes the nearer one
    d = geodesic_distance(image, [(0, 0, 0), (0, 0, 4)], spacing=spacing, lamb=1.0)
    np.testing.assert_allclose(d.ravel(), [0.0, 2.00002, 2.00004, 6.00002, 0.0], rtol=RTOL)


def test_hand_computed_diagonals():
    # constant image, lamb = 0: one diagonal step costs the Euclidean length of the spacing vector it spans
    d = geodesic_distance(np.zeros((2, 2, 2)), [(0, 0, 0)], spacing=(1.0, 2.0, 2.0), lamb=0.0)
    assert d[1, 1, 1] == pytest.approx(3.0)  # sqrt(1 + 4 + 4)
    assert d[0, 1, 1] == pytest.approx(np.sqrt(8.0))
    assert d[1, 0, 0] == pytest.approx(1.0)
    d = geodesic_distance(np.zeros((1, 2, 2)), [(0, 0, 0)], spacing=(1.0, 3.0, 4.0), lamb=0.0)
    assert d[0, 1, 1] == pytest.approx(5.0)  # the diagonal (5) beats two axis steps (7)


def test_winding_path_needs_sweeps_and_converges_exactly():
    image, mask = _maze(corridors=9)
    exact = dijkstra_geodesic_distance(image, mask, lamb=0.5)
    dist, sweeps = geodesic_distance(image, mask, lamb=0.5, return_iterations=True)
    np.testing.assert_allclose(dist, exact, rtol=RTOL, atol=ATOL)
    assert sweeps >= 5  # a sweep gets through about two corridors
    far = dist[0, -1].max()  # along the last corridor: tiny steps once the path winds through the gaps
    previous = None
    for n in (1, 2, 4):
        truncated, ran = geodesic_distance(image, mask, lamb=0.5, max_iterations=n, return_iterations=True)
        assert ran == n and np.all(np.isfinite(truncated))
        assert np.all(truncated >= dist * (1 - RTOL))  # an upper bound of the converged distance
        assert truncated[0, -1].max() > 100 * far  # not there yet: the last corridor is reached through walls
        if previous is not None:
            assert np.all(truncated <= previous)
        previous = truncated


def test_torch_backend_matches_numpy():
    pytest.importorskip("torch")
    for channels, spacing in ((None, (1.0, 1.0, 1.0)), (2, (0.5, 1.0, 3.0))):
        image, mask = _random_case((8, 7, 6), seed=6, channels=channels)
        ref, n_ref = geodesic_distance(image, mask, spacing=spacing, return_iterations=True)
        out, n_out = geodesic_distance(image, mask, spacing=spacing, backend="torch", return_iterations=True)
        np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)
        assert n_out == n_ref and out.dtype == np.float32


def test_torch_tensor_inputs():
    torch = pytest.importorskip("torch")
    image, mask = _random_case((5, 6, 4), seed=7)
    ref = geodesic_distance(image, mask)
    out = geodesic_distance(torch.from_numpy(image), torch.from_numpy(mask), backend="torch", device="cpu")
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_dense_path_without_plane_skipping(backend, monkeypatch):
    """The path GPUs take (every plane relaxed, one comparison per sweep), run here on CPU."""
    if backend == "torch":
        pytest.importorskip("torch")
    monkeypatch.setattr(geodesic, "_SKIP_UNCHANGED_PLANES", False)
    image, mask = _maze(corridors=4, length=6)
    image = image + np.random.default_rng(8).random(image.shape)
    exact = dijkstra_geodesic_distance(image, mask, spacing=(1.0, 0.8, 1.2))
    dist = geodesic_distance(image, mask, spacing=(1.0, 0.8, 1.2), backend=backend)
    np.testing.assert_allclose(dist, exact, rtol=RTOL, atol=ATOL)


def test_integer_image_and_large_offset():
    rng = np.random.default_rng(9)
    image = (10000 + rng.integers(0, 50, (6, 6, 6))).astype(np.int32)
    mask = np.zeros((6, 6, 6), dtype=bool)
    mask[2, 3, 4] = True
    np.testing.assert_allclose(
        geodesic_distance(image, mask), dijkstra_geodesic_distance(image, mask), rtol=RTOL, atol=ATOL
    )


_IMG = np.zeros((4, 5, 6))
_SEEDS = np.zeros((4, 5, 6), dtype=bool)
_SEEDS[1, 1, 1] = True


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"image": np.zeros((4, 5))}, "image"),
        ({"image": np.zeros((1, 2, 4, 5, 6))}, "image"),
        ({"image": _IMG.astype(bool)}, "image"),
        ({"image": _IMG.astype(complex)}, "image"),
        ({"image": np.zeros((0, 5, 6)), "seeds": np.zeros((0, 5, 6), bool)}, "image"),
        ({"image": np.where(_SEEDS, np.nan, 0.0)}, "image"),
        ({"image": np.where(_SEEDS, np.inf, 0.0)}, "image"),
        ({"seeds": np.zeros((4, 5, 7), dtype=bool)}, "seeds"),
        ({"seeds": _SEEDS.astype(np.float32)}, "seeds"),
        ({"seeds": np.zeros((4, 5, 6), dtype=bool)}, "seeds"),
        ({"seeds": []}, "seeds"),
        ({"seeds": [(4, 0, 0)]}, "seeds"),
        ({"seeds": [(-1, 0, 0)]}, "seeds"),
        ({"seeds": [(1, 2)]}, "seeds"),
        ({"seeds": [(1.5, 2, 3)]}, "seeds"),
        ({"spacing": (1.0, 1.0)}, "spacing"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing"),
        ({"spacing": (1.0, -2.0, 1.0)}, "spacing"),
        ({"spacing": (1.0, float("nan"), 1.0)}, "spacing"),
        ({"spacing": "abc"}, "spacing"),
        ({"lamb": -0.1}, "lamb"),
        ({"lamb": 1.5}, "lamb"),
        ({"lamb": float("nan")}, "lamb"),
        ({"lamb": "x"}, "lamb"),
        ({"max_iterations": 0}, "max_iterations"),
        ({"max_iterations": 2.5}, "max_iterations"),
        ({"max_iterations": True}, "max_iterations"),
        ({"backend": "cupy"}, "backend"),
        ({"device": "cpu"}, "device"),
    ],
)
def test_value_errors(kwargs, match):
    args = {"image": _IMG, "seeds": _SEEDS, **kwargs}
    with pytest.raises(ValueError, match=match):
        geodesic_distance(args.pop("image"), args.pop("seeds"), **args)


def test_value_errors_torch_device_and_dijkstra():
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match="device"):
        geodesic_distance(_IMG, _SEEDS, backend="torch", device="no-such-device")
    with pytest.raises(ValueError, match="lamb"):
        dijkstra_geodesic_distance(_IMG, _SEEDS, lamb=2.0)
    with pytest.raises(ValueError, match="seeds"):
        dijkstra_geodesic_distance(_IMG, np.zeros_like(_SEEDS))


def _geodistk():
    try:
        import GeodisTK
    except ImportError:
        pytest.skip(
            "GeodisTK not installed (optional comparison). Install it with: "
            "CPPFLAGS=-DNPY_IN_ARRAY=NPY_ARRAY_IN_ARRAY pip install --no-build-isolation GeodisTK"
        )
    return GeodisTK


@pytest.mark.parametrize("channels", [None, 2])
def test_geodistk_agrees(channels, capfd):
    """GeodisTK takes arrays in the given axis order (here [i, j, k]), spacing in that order, float32 image
    with channels last, uint8 seeds; many iterations reach our converged distance, 4 give an upper bound."""
    gtk = _geodistk()
    spacing = (0.8, 1.0, 2.0)
    image, mask = _random_case((10, 9, 8), seed=10, channels=channels)
    image = np.ascontiguousarray(image if channels is None else np.moveaxis(image, 0, -1), dtype=np.float32)
    ours = geodesic_distance(image if channels is None else np.moveaxis(image, -1, 0), mask, spacing=spacing)
    theirs = gtk.geodesic3d_raster_scan(image, mask.astype(np.uint8), list(spacing), 0.5, 50)
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)
    four = gtk.geodesic3d_raster_scan(image, mask.astype(np.uint8), list(spacing), 0.5, 4)
    assert np.all(four >= ours * (1 - 1e-4) - 1e-6)
    capfd.readouterr()  # GeodisTK prints the input shape and spacing


def test_geodistk_four_iterations_upper_bound_on_maze(capfd):
    gtk = _geodistk()
    image, mask = _maze(corridors=9)
    ours = geodesic_distance(image, mask, lamb=0.5)
    image32, seeds = image.astype(np.float32), mask.astype(np.uint8)
    four = gtk.geodesic3d_raster_scan(image32, seeds, [1.0, 1.0, 1.0], 0.5, 4)
    assert np.all(four >= ours * (1 - 1e-4) - 1e-6)
    assert four[0, -1].max() > 100 * ours[0, -1].max()  # 4 iterations do not get through the serpentine
    many = gtk.geodesic3d_raster_scan(image32, seeds, [1.0, 1.0, 1.0], 0.5, 100)
    np.testing.assert_allclose(many, ours, rtol=1e-4, atol=1e-6)
    capfd.readouterr()
