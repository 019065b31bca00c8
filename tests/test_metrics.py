"""The pure metric functions of gan.metrics on known inputs; no classifier and no TensorFlow."""

import math

import numpy as np
import pytest

from gan import metrics
from gan.errors import InputError


@pytest.fixture(scope="module")
def gaussian_features():
    rng = np.random.default_rng(0)
    return rng.standard_normal((600, 16))


def test_frechet_identical_sets_near_zero(gaussian_features):
    assert metrics.frechet_distance(gaussian_features, gaussian_features) == pytest.approx(0.0, abs=1e-8)


def test_frechet_matches_closed_form():
    # Diagonal covariances: FD = |mu_a - mu_b|^2 + sum (sqrt(var_a) - sqrt(var_b))^2.
    mean_a, mean_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    variances_a, variances_b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    distance = metrics.frechet_distance_from_statistics(
        mean_a, np.diag(variances_a), mean_b, np.diag(variances_b)
    )
    expected = 1.0 + 4.0 + (1.0 - 2.0) ** 2 + (2.0 - 1.0) ** 2 + 0.0
    assert distance == pytest.approx(expected, rel=1e-10)


def test_frechet_non_commuting_covariances():
    # Random covariances do not commute, so C_a C_b is not symmetric. scipy.linalg.sqrtm of that
    # product is an independent check of the eigh route, where scipy is installed.
    rng = np.random.default_rng(1)
    half_a, half_b = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    covariance_a, covariance_b = half_a @ half_a.T, half_b @ half_b.T
    linalg = pytest.importorskip("scipy.linalg")
    trace_root = np.trace(linalg.sqrtm(covariance_a @ covariance_b)).real
    expected = np.trace(covariance_a) + np.trace(covariance_b) - 2 * trace_root
    zeros = np.zeros(5)
    assert metrics.frechet_distance_from_statistics(
        zeros, covariance_a, zeros, covariance_b
    ) == pytest.approx(expected, rel=1e-8)


def test_frechet_shifted_set_grows(gaussian_features):
    shifted = gaussian_features + 3.0
    # A shift by 3 in each of 16 dimensions adds 16 * 9 to the mean term and nothing to the rest.
    assert metrics.frechet_distance(gaussian_features, shifted) == pytest.approx(144.0, rel=1e-9)


def test_frechet_fewer_samples_than_dimensions():
    rng = np.random.default_rng(2)
    distance = metrics.frechet_distance(rng.standard_normal((10, 64)), rng.standard_normal((10, 64)))
    assert math.isfinite(distance)
    assert distance > 0


def test_frechet_rejects_one_vector():
    with pytest.raises(ValueError, match="at least 2 feature vectors"):
        metrics.frechet_distance(np.zeros((1, 4)), np.zeros((5, 4)))


def test_frechet_rejects_nan():
    features = np.ones((5, 4))
    features[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.frechet_distance(features, np.ones((5, 4)))


def test_kid_identical_sets_near_zero(gaussian_features):
    kid = metrics.kernel_distance(gaussian_features, gaussian_features, subsets=20, subset_size=300)
    shifted = metrics.kernel_distance(gaussian_features, gaussian_features + 0.5, subsets=20, subset_size=300)
    # Shared images bias the estimate slightly below 0; a shift of half a standard deviation is 1.0.
    assert abs(kid.value) < 0.05 * shifted.value
    assert math.isfinite(kid.std_error)
    assert kid.std_error > 0
    assert kid.subsets == 20
    assert kid.subset_size == 300


def test_kid_same_distribution_within_error():
    rng = np.random.default_rng(7)
    features_a, features_b = rng.standard_normal((2000, 16)), rng.standard_normal((2000, 16))
    kid = metrics.kernel_distance(features_a, features_b, subsets=50)
    assert abs(kid.value) < 4 * kid.std_error


def test_kid_subsets_match_direct_estimate():
    rng = np.random.default_rng(3)
    features_a, features_b = rng.standard_normal((50, 8)), rng.standard_normal((40, 8)) + 0.5
    kid = metrics.kernel_distance(features_a, features_b, subsets=7, subset_size=30, seed=5)

    draws = np.random.default_rng(5)
    estimates = []
    for _ in range(7):
        x = features_a[draws.choice(50, 30, replace=False)]
        y = features_b[draws.choice(40, 30, replace=False)]
        estimates.append(metrics.unbiased_mmd2(x, y))
    assert kid.value == pytest.approx(np.mean(estimates), rel=1e-10)
    assert kid.std_error == pytest.approx(np.std(estimates, ddof=1) / math.sqrt(7), rel=1e-8)


def test_kid_shifted_set_positive(gaussian_features):
    kid = metrics.kernel_distance(gaussian_features, gaussian_features + 1.0, subsets=10, subset_size=200)
    assert kid.value > 10 * kid.std_error


def test_kid_subset_size_capped_by_set():
    kid = metrics.kernel_distance(np.eye(3), np.eye(3)[::-1], subsets=4, subset_size=1000)
    assert kid.subset_size == 3


def test_kid_rejects_single_vector():
    with pytest.raises(ValueError, match="at least 2 feature vectors"):
        metrics.kernel_distance(np.zeros((1, 3)), np.zeros((5, 3)))


def test_polynomial_kernel_values():
    x = np.array([[1.0, 1.0], [0.0, 0.0]])
    y = np.array([[2.0, 0.0]])
    # (x.y / 2 + 1)^3: (2 / 2 + 1)^3 = 8 and (0 + 1)^3 = 1.
    assert metrics.polynomial_kernel(x, y).tolist() == [[8.0], [1.0]]


def one_hot(classes, num_classes=10):
    return np.eye(num_classes)[np.asarray(classes)]


def test_coverage_one_class():
    coverage = metrics.class_coverage(one_hot([3] * 50), np.full(10, 0.1))
    assert coverage.shares[3] == 1.0
    assert sum(coverage.shares) == 1.0
    assert coverage.entropy_bits == 0.0
    assert coverage.max_deviation == pytest.approx(0.9)


def test_coverage_uniform_classes():
    coverage = metrics.class_coverage(one_hot(list(range(10)) * 7), np.full(10, 0.1))
    assert coverage.entropy_bits == pytest.approx(math.log2(10))
    assert coverage.max_deviation == pytest.approx(0.0, abs=1e-12)


def test_coverage_rejects_wrong_share_count():
    with pytest.raises(ValueError, match=r"expected_shares must have shape \(10,\)"):
        metrics.class_coverage(one_hot([1, 2]), np.full(9, 1 / 9))


def test_class_shares_of_labels():
    assert metrics.class_shares(np.array([0, 0, 1, 3]), 4).tolist() == [0.5, 0.25, 0.0, 0.25]


def test_confidence_bounds():
    assert metrics.confidence(one_hot([1, 2, 3])) == 1.0
    assert metrics.confidence(np.full((4, 10), 0.1)) == pytest.approx(0.1)


def test_label_accuracy_counts_matches():
    probabilities = one_hot([0, 1, 2, 3])
    assert metrics.label_accuracy(probabilities, np.array([0, 1, 0, 0])) == 0.5


def test_label_accuracy_rejects_wrong_length():
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        metrics.label_accuracy(one_hot([0, 1]), np.array([0, 1, 2]))


def test_diversity_constant_images_zero():
    images = np.full((20, 28, 28), 77, dtype=np.uint8)
    assert metrics.pixel_diversity(images) == 0.0


def test_diversity_black_and_white_one():
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    images[1] = 255
    assert metrics.pixel_diversity(images) == pytest.approx(1.0)


def test_diversity_matches_pairwise_loop():
    images = np.random.default_rng(4).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    pixels = images.reshape(6, -1) / 255.0
    distances = [np.sqrt(np.mean((pixels[i] - pixels[j]) ** 2)) for i in range(6) for j in range(i + 1, 6)]
    assert metrics.pixel_diversity(images) == pytest.approx(np.mean(distances), rel=1e-9)
    assert metrics.pixel_diversity(images, rows=4) == pytest.approx(np.mean(distances), rel=1e-9)


def test_diversity_rejects_single_image():
    with pytest.raises(ValueError, match="at least 2 images"):
        metrics.pixel_diversity(np.zeros((1, 28, 28), dtype=np.uint8))


def test_constant_generator_scores():
    """A generator that always draws the same digit: zero diversity and one class."""
    images = np.full((30, 28, 28), 9, dtype=np.uint8)
    features = np.tile(np.linspace(0.0, 1.0, 8), (30, 1))
    probabilities = one_hot([4] * 30)
    reference = np.random.default_rng(6).standard_normal((30, 8))
    scores = metrics.score_set(images, features, probabilities, reference, np.full(10, 0.1))

    assert scores.diversity == 0.0
    assert scores.class_entropy_bits == 0.0
    assert scores.class_shares[4] == 1.0
    assert scores.max_class_deviation == pytest.approx(0.9)
    assert scores.confidence == 1.0
    assert scores.label_accuracy is None
    assert scores.frechet_distance > 1.0


def test_balanced_labels_cycle():
    assert metrics.balanced_labels(12, 10).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


@pytest.mark.parametrize("samples", [0, 1, metrics.MAX_SAMPLES + 1, 2.5, True, "100"])
def test_check_samples_rejects(samples):
    with pytest.raises(InputError, match="number of samples must be"):
        metrics.check_samples(samples)


def test_check_samples_accepts_bounds():
    assert metrics.check_samples(2) == 2
    assert metrics.check_samples(metrics.MAX_SAMPLES) == metrics.MAX_SAMPLES


def test_dataset_of_source_names(tmp_path, monkeypatch, mnist_path):
    monkeypatch.setenv("GAN_MNIST_PATH", str(mnist_path))
    assert metrics.dataset_of_source("mnist") == "mnist"
    assert metrics.dataset_of_source("fashion_mnist") == "fashion_mnist"
    assert metrics.dataset_of_source(str(mnist_path)) == "mnist"
    assert metrics.dataset_of_source(str(tmp_path)) is None
    assert metrics.dataset_of_source(str(tmp_path / "missing")) is None


def test_cli_constants_match_metrics():
    from gan import cli

    assert cli.DEFAULT_EVALUATE_SAMPLES == metrics.DEFAULT_SAMPLES
    assert cli.MAX_EVALUATE_SAMPLES == metrics.MAX_SAMPLES
