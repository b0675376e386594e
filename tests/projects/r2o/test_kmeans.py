"""K-means against scipy.cluster.vq.kmeans2 (same data, k-means++ seeding on
both sides), and its guarantees: seeded reproducibility, no NaN centroid,
k capped at the points and at the distinct points."""
import warnings

import numpy as np
import pytest
import torch
from scipy.cluster.vq import kmeans2

from d2ext_projects.r2o.kmeans import inertia, kmeans

SEEDS = range(5)


def blobs(n=2000, d=16, centres=10, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, d)) * 3.0
    return (means[rng.integers(0, centres, n)] + rng.normal(size=(n, d))).astype(np.float32)


def unit_vectors(n=2000, d=16, seed=1):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def scipy_inertia(data, k, iters, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kmeans2 warns about its own empty clusters
        centroids, labels = kmeans2(data.astype(np.float64), k, iter=iters, minit="++", seed=seed)
    return float(((data - centroids[labels]) ** 2).sum())


@pytest.mark.parametrize(
    "name, data, k",
    [("blobs", blobs(), 10), ("blobs, k above the blobs", blobs(), 32), ("unit vectors", unit_vectors(), 16),
     ("unit vectors, many clusters", unit_vectors(), 64)],
)
def test_inertia_not_worse_than_scipy(name, data, k):
    ours, theirs = [], []
    x = torch.from_numpy(data)
    for seed in SEEDS:
        labels, centroids = kmeans(x, k, num_iters=20, generator=torch.Generator().manual_seed(seed))
        assert centroids.shape == (k, data.shape[1])
        ours.append(inertia(x, labels, centroids))
        theirs.append(scipy_inertia(data, k, 20, seed))
    # Means over seeds: single runs of both land in different local minima.
    ratio = np.mean(ours) / np.mean(theirs)
    assert ratio <= 1.02, f"{name}: mean inertia {np.mean(ours):.1f} vs scipy's {np.mean(theirs):.1f}"


def test_labels_are_nearest_centroids_and_centroids_are_means_at_convergence():
    x = torch.from_numpy(blobs(n=300, d=4, centres=3))
    labels, centroids = kmeans(x, 3, num_iters=100, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(labels, torch.cdist(x.double(), centroids.double()).argmin(1))
    for c in range(3):
        torch.testing.assert_close(centroids[c], x[labels == c].mean(0), rtol=1e-5, atol=1e-5)


def test_same_seed_same_labels_other_seed_other_run():
    x = torch.from_numpy(unit_vectors(n=500))
    a = kmeans(x, 16, 10, torch.Generator().manual_seed(3))
    b = kmeans(x, 16, 10, torch.Generator().manual_seed(3))
    c = kmeans(x, 16, 10, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_k_capped_at_number_of_points():
    x = torch.randn(5, 3)
    labels, centroids = kmeans(x, 8, 5, torch.Generator().manual_seed(0))
    assert centroids.shape == (5, 3)
    # every point is its own cluster
    assert sorted(labels.tolist()) == list(range(5))
    torch.testing.assert_close(centroids[labels], x)


def test_duplicated_points_cap_k_at_distinct_points_without_nan():
    distinct = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    x = distinct.repeat(20, 1)  # 60 points, 3 distinct
    for seed in range(5):
        labels, centroids = kmeans(x, 10, 10, torch.Generator().manual_seed(seed))
        assert centroids.shape == (3, 2)
        assert torch.isfinite(centroids).all()
        assert inertia(x, labels, centroids) == 0.0
        assert len(set(map(tuple, centroids.tolist()))) == 3


def test_single_point_and_single_cluster():
    labels, centroids = kmeans(torch.tensor([[1.0, 2.0]]), 4, 3, torch.Generator().manual_seed(0))
    assert labels.tolist() == [0] and centroids.tolist() == [[1.0, 2.0]]
    x = torch.randn(50, 3)
    labels, centroids = kmeans(x, 1, 3, torch.Generator().manual_seed(0))
    assert labels.eq(0).all()
    torch.testing.assert_close(centroids[0], x.mean(0))


def test_empty_clusters_are_reseeded_not_nan():
    # Two far groups and k = 6 with a single Lloyd step allowed from seeds
    # that often leave clusters empty; no centroid may become NaN.
    x = torch.cat([torch.zeros(40, 2) + torch.randn(40, 2) * 1e-3, torch.full((3, 2), 100.0)])
    for seed in range(10):
        labels, centroids = kmeans(x, 6, 10, torch.Generator().manual_seed(seed))
        assert torch.isfinite(centroids).all()
        assert labels.max() < centroids.shape[0]


def test_reseeding_takes_the_farthest_points():
    from d2ext_projects.r2o.kmeans import _assign, _update

    x = torch.tensor([[0.0], [1.0], [10.0], [11.0], [30.0]])
    centroids = torch.tensor([[0.5], [10.5], [-100.0], [-200.0]])  # the last two attract no point
    labels, d2 = _assign(x, centroids)
    new = _update(x, labels, centroids, d2)
    # 30 is farthest from its centroid (10.5), then 0 and 1 (0.5 away, first in topk order) / 10 / 11
    assert new[0].item() == 0.5 and new[2].item() == 30.0
    assert new[3].item() in (0.0, 1.0, 10.0, 11.0)
    assert torch.isfinite(new).all()


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        kmeans(torch.tensor([[float("nan"), 0.0]]), 1, 1, torch.Generator())
    with pytest.raises(ValueError, match="K_START"):
        kmeans(torch.randn(4, 2), 0, 1, torch.Generator())
    with pytest.raises(ValueError, match="N >= 1"):
        kmeans(torch.zeros(0, 2), 1, 1, torch.Generator())


def test_half_precision_input_returns_its_dtype():
    x = torch.from_numpy(unit_vectors(n=200)).half()
    labels, centroids = kmeans(x, 8, 5, torch.Generator().manual_seed(0))
    assert centroids.dtype == torch.float16 and labels.dtype == torch.int64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_with_cpu_generator_matches_cpu():
    x = torch.from_numpy(blobs(n=1000, d=8, centres=5))
    cpu = kmeans(x, 5, 10, torch.Generator().manual_seed(0))
    gpu = kmeans(x.cuda(), 5, 10, torch.Generator().manual_seed(0))
    assert gpu[0].device.type == "cuda"
    assert torch.equal(cpu[0], gpu[0].cpu())
    again = kmeans(x.cuda(), 5, 10, torch.Generator().manual_seed(0))
    assert torch.equal(gpu[0], again[0]) and torch.equal(gpu[1], again[1])
