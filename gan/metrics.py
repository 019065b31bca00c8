"""Sample quality of a generator, measured with the features of a shipped classifier.

The functions in the first part are pure: numpy arrays in, numbers or
dataclasses out. ``evaluate_generator`` ties them together: it generates N
digits from fixed seeds, runs the dataset's classifier (``gan.classifier``)
and compares them with N real test images. Every metric comes with its
real-data floor, the same metric for N real training images against the same
N test images, which is what a perfect generator would score at this N.

- Frechet distance (FID with the classifier's 128 features in place of
  Inception's): ||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2)).
- Kernel distance (KID): the unbiased estimate of MMD^2 with the cubic
  polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets.
- Class coverage: the share of each predicted class, the entropy of those
  shares in bits (log2(10) = 3.32 for 10 equal classes), and the largest
  absolute difference from the class shares of the real test split.
- Confidence: the mean top class probability. For a conditional generator,
  label accuracy: the share of digits classified as the class requested.
- Diversity: the mean RMS pixel difference over all pairs of digits, with
  pixels scaled to [0, 1]. It ranges from 0 (all digits identical) to 1.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gan.errors import InputError

log = logging.getLogger(__name__)

# At 2,000 digits one evaluation took 6 to 8 s on a shared 2-core CPU, plus 8 s
# once for the reference. Over 5 seeds, the Frechet distance of
# assets/pretrained/generator.keras was 86.1 with a standard deviation of 1.5.
DEFAULT_SAMPLES = 2000
# The reference digits come from the test split, which has 10,000 images in both datasets.
MAX_SAMPLES = 10_000
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
# The real images of the floor and the reference are drawn with this seed, so
# that the floor depends only on the classifier and N.
REFERENCE_SEED = 0


# Pure functions ---------------------------------------------------------------


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the mean (D,) and covariance (D, D) of features (N, D), in float64."""
    features = _as_matrix(features, "features")
    if len(features) < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {len(features)}.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Return the square root of a symmetric positive semi-definite matrix, by eigendecomposition."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance_from_statistics(
    mean_a: np.ndarray, covariance_a: np.ndarray, mean_b: np.ndarray, covariance_b: np.ndarray
) -> float:
    """Return the Frechet distance between the Gaussians N(mean_a, covariance_a) and N(mean_b, covariance_b).

    tr((C_a C_b)^(1/2)) equals tr((S C_b S)^(1/2)) with S = C_a^(1/2), because
    both matrices have the same eigenvalues. S C_b S is symmetric positive
    semi-definite, so its eigenvalues come from ``eigh`` without the complex
    round-off that a general matrix square root of C_a C_b produces.
    """
    root_a = _symmetric_sqrt(covariance_a)
    product = root_a @ covariance_b @ root_a
    eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
    trace_root = float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    difference = mean_a - mean_b
    distance = (
        float(difference @ difference)
        + float(np.trace(covariance_a) + np.trace(covariance_b))
        - 2 * trace_root
    )
    return max(distance, 0.0)  # round-off can make the distance of identical sets slightly negative


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Return the Frechet distance between Gaussians fitted to two feature sets (N, D) and (M, D)."""
    return frechet_distance_from_statistics(*feature_statistics(features_a), *feature_statistics(features_b))


@dataclass(frozen=True)
class KernelDistance:
    """KID: the mean of unbiased MMD^2 estimates over random subsets, and its standard error."""

    value: float
    std_error: float  # standard deviation of the subset estimates / sqrt(subsets)
    subsets: int
    subset_size: int


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return the cubic polynomial kernel matrix (x.y / d + 1)^3 of rows x (N, d) and y (M, d)."""
    kernel = x @ y.T
    kernel /= x.shape[1]
    kernel += 1.0
    cube = kernel * kernel
    cube *= kernel
    return cube


def unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Return the unbiased estimate of MMD^2 between samples x (m, d) and y (n, d), m and n >= 2.

    The within-sample means leave out the diagonal k(x_i, x_i), so the
    estimate is unbiased and may be negative when both samples share one distribution.
    """
    m, n = len(x), len(y)
    k_xx = polynomial_kernel(x, x)
    k_yy = polynomial_kernel(y, y)
    k_xy = polynomial_kernel(x, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.mean())


def kernel_distance(
    features_a: np.ndarray,
    features_b: np.ndarray,
    *,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> KernelDistance:
    """Estimate KID between two feature sets from ``subsets`` random subsets of each.

    Each subset has ``subset_size`` rows, or all rows of the smaller set when
    that has fewer, drawn without replacement and independently from each
    set. Each subset's estimate equals ``unbiased_mmd2`` on its rows. Subsets
    overlap when the sets are small, so the standard error describes the
    subset draw, not the spread over new sets of N images.

    NOTE: passing the same images as both sets gives a slightly negative
    value, because a pair of subsets that share an image adds k(x, x) to the
    cross term. Disjoint sets from one distribution give 0 within the error.
    """
    features_a = _as_matrix(features_a, "features_a")
    features_b = _as_matrix(features_b, "features_b")
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"feature sizes differ: {features_a.shape[1]} and {features_b.shape[1]}.")
    size = min(subset_size, len(features_a), len(features_b))
    if size < 2:
        raise ValueError(f"KID needs at least 2 feature vectors in each set, got {size}.")
    if subsets < 1:
        raise ValueError(f"subsets must be at least 1, got {subsets}.")

    rng = np.random.default_rng(seed)
    members_a = np.zeros((len(features_a), subsets))
    members_b = np.zeros((len(features_b), subsets))
    for index in range(subsets):
        members_a[rng.choice(len(features_a), size, replace=False), index] = 1.0
        members_b[rng.choice(len(features_b), size, replace=False), index] = 1.0

    # Kernel sums over every subset at once: sum_ij w_i k(x_i, y_j) v_j for 0/1 membership
    # columns w and v, so each kernel matrix is computed once instead of once per subset.
    sum_aa = _kernel_subset_sums(features_a, features_a, members_a, members_a)
    sum_bb = _kernel_subset_sums(features_b, features_b, members_b, members_b)
    sum_ab = _kernel_subset_sums(features_a, features_b, members_a, members_b)
    dimension = features_a.shape[1]
    diagonal_a = members_a.T @ ((features_a * features_a).sum(axis=1) / dimension + 1.0) ** 3
    diagonal_b = members_b.T @ ((features_b * features_b).sum(axis=1) / dimension + 1.0) ** 3
    pairs = size * (size - 1)
    estimates = (sum_aa - diagonal_a) / pairs + (sum_bb - diagonal_b) / pairs - 2 * sum_ab / (size * size)

    std_error = float(estimates.std(ddof=1) / math.sqrt(subsets)) if subsets > 1 else 0.0
    return KernelDistance(float(estimates.mean()), std_error, subsets, size)


def _kernel_subset_sums(
    x: np.ndarray, y: np.ndarray, members_x: np.ndarray, members_y: np.ndarray, rows: int = 1024
) -> np.ndarray:
    """Return, per subset column, the sum of the polynomial kernel over its members of x and y.

    The kernel matrix is built ``rows`` rows at a time, so memory stays near
    rows x len(y) floats even for 10,000 images.
    """
    sums = np.zeros(members_x.shape[1])
    for start in range(0, len(x), rows):
        block = polynomial_kernel(x[start : start + rows], y)
        sums += ((block @ members_y) * members_x[start : start + rows]).sum(axis=0)
    return sums


@dataclass(frozen=True)
class ClassCoverage:
    """Predicted class shares of an image set, with their entropy and largest deviation."""

    shares: tuple[float, ...]  # share of the images predicted as each class; sums to 1
    entropy_bits: float  # entropy of ``shares`` in bits: 0 for one class, log2(K) for K equal classes
    max_deviation: float  # max over classes of |share - expected share|, from 0 to 1


def class_coverage(probabilities: np.ndarray, expected_shares: np.ndarray) -> ClassCoverage:
    """Measure the predicted class shares of probabilities (N, K) against ``expected_shares`` (K,)."""
    probabilities = _as_matrix(probabilities, "probabilities")
    expected_shares = np.asarray(expected_shares, dtype=np.float64)
    num_classes = probabilities.shape[1]
    if expected_shares.shape != (num_classes,):
        raise ValueError(f"expected_shares must have shape ({num_classes},), got {expected_shares.shape}.")
    if len(probabilities) == 0:
        raise ValueError("class coverage needs at least one image.")
    counts = np.bincount(probabilities.argmax(axis=1), minlength=num_classes)
    shares = counts / counts.sum()
    present = shares[shares > 0]
    entropy = float(-(present * np.log2(present)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0
    deviation = float(np.abs(shares - expected_shares).max())
    return ClassCoverage(tuple(float(share) for share in shares), entropy, deviation)


def class_shares(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Return the share of each class 0..num_classes-1 among integer ``labels``."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]
    return counts / max(int(counts.sum()), 1)


def confidence(probabilities: np.ndarray) -> float:
    """Return the mean top class probability of probabilities (N, K), from 1/K to 1."""
    return float(_as_matrix(probabilities, "probabilities").max(axis=1).mean())


def label_accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Return the share of images whose predicted class is their label, from 0 to 1."""
    probabilities = _as_matrix(probabilities, "probabilities")
    labels = np.asarray(labels)
    if labels.shape != (len(probabilities),):
        raise ValueError(f"labels must have shape ({len(probabilities)},), got {labels.shape}.")
    return float(np.mean(probabilities.argmax(axis=1) == labels))


def pixel_diversity(images: np.ndarray, rows: int = 1000) -> float:
    """Return the mean RMS pixel difference over all pairs of uint8 images (N, H, W), from 0 to 1.

    Pixels are scaled to [0, 1] first. The squared distances come from Gram
    matrix products of ``rows`` images against all, so memory stays near
    rows x N floats even for 10,000 images.
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (N, H, W), got {images.shape}.")
    count = len(images)
    if count < 2:
        raise ValueError(f"diversity needs at least 2 images, got {count}.")
    pixels = images.reshape(count, -1).astype(np.float64) / 255.0
    # Centering leaves the distances as they are and removes most of the round-off of the Gram
    # expansion |a|^2 + |b|^2 - 2 a.b, so identical images give exactly 0.
    pixels -= pixels.mean(axis=0)
    squared_norms = (pixels**2).sum(axis=1)

    total = 0.0
    for start in range(0, count, rows):
        block = pixels[start : start + rows]
        squared = squared_norms[start : start + rows, None] + squared_norms[None, :] - 2 * block @ pixels.T
        rms = np.sqrt(np.clip(squared, 0.0, None) / pixels.shape[1])
        # Each pair once: row i of the block is image start + i, paired with the images after it.
        later = np.arange(count)[None, :] > np.arange(start, start + len(block))[:, None]
        total += float(rms[later].sum())
    return total / (count * (count - 1) / 2)


def _as_matrix(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, D), got shape {values.shape}.")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return values


# Scores of one image set ------------------------------------------------------


@dataclass(frozen=True)
class SetScores:
    """Every metric of one image set against the reference test images."""

    frechet_distance: float
    kid: float
    kid_std_error: float
    class_shares: tuple[float, ...]
    class_entropy_bits: float
    max_class_deviation: float
    confidence: float
    label_accuracy: float | None  # None when the images have no requested classes
    diversity: float


def score_set(
    images: np.ndarray,
    features: np.ndarray,
    probabilities: np.ndarray,
    reference_features: np.ndarray,
    expected_shares: np.ndarray,
    labels: np.ndarray | None = None,
) -> SetScores:
    """Score images with their classifier outputs against the reference features and class shares.

    ``labels`` are the classes the images were requested as (conditional
    generators), or the true classes of real images; with None,
    ``label_accuracy`` is None.
    """
    kid = kernel_distance(features, reference_features)
    coverage = class_coverage(probabilities, expected_shares)
    return SetScores(
        frechet_distance=frechet_distance(features, reference_features),
        kid=kid.value,
        kid_std_error=kid.std_error,
        class_shares=coverage.shares,
        class_entropy_bits=coverage.entropy_bits,
        max_class_deviation=coverage.max_deviation,
        confidence=confidence(probabilities),
        label_accuracy=None if labels is None else label_accuracy(probabilities, labels),
        diversity=pixel_diversity(images),
    )


@dataclass(frozen=True)
class QualityReport:
    """The metrics of N generated digits, and of N real training digits as the floor."""

    dataset: str
    samples: int
    seed: int  # the digits use seeds seed .. seed + samples - 1
    generated: SetScores
    floor: SetScores  # real training images against the same reference test images
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


# Row label, SetScores field, number format. Class shares are listed separately.
REPORT_ROWS = (
    ("Frechet distance", "frechet_distance", "{:.3f}"),
    ("KID", "kid", "{:.5f}"),
    ("KID standard error", "kid_std_error", "{:.5f}"),
    ("class entropy (bits)", "class_entropy_bits", "{:.3f}"),
    ("max class share deviation", "max_class_deviation", "{:.3f}"),
    ("confidence", "confidence", "{:.3f}"),
    ("label accuracy", "label_accuracy", "{:.3f}"),
    ("pixel diversity", "diversity", "{:.3f}"),
)


def report_rows(report: QualityReport) -> list[tuple[str, str, str]]:
    """Return (metric, generated value, real-data floor) rows as text, for a table."""
    rows = []
    for label, name, number_format in REPORT_ROWS:
        value, floor = getattr(report.generated, name), getattr(report.floor, name)
        if value is None:
            continue
        rows.append((label, number_format.format(value), number_format.format(floor)))
    return rows


def format_report(report: QualityReport) -> str:
    """Format a report as a plain-text table with the class shares below it."""
    header = ("metric", "value", "real-data floor")
    rows = [header, *report_rows(report)]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = [
        f"{report.dataset}: {report.samples} generated digits (seeds {report.seed}.."
        f"{report.seed + report.samples - 1}) against {report.samples} real test images"
    ]
    for row in rows:
        lines.append(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}")
    shares = " ".join(f"{share:.3f}" for share in report.generated.class_shares)
    real_shares = " ".join(f"{share:.3f}" for share in report.floor.class_shares)
    lines.append(f"class shares, generated:  {shares}")
    lines.append(f"class shares, real train: {real_shares}")
    return "\n".join(lines)


# Reference images and floors ---------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """The real images that generated ones are compared with, for one classifier and N."""

    features: np.ndarray  # classifier features of N test images
    expected_shares: np.ndarray  # class shares of the whole test split
    floor: SetScores


_REFERENCES: dict[tuple, Reference] = {}


def check_samples(samples: int) -> int:
    """Return ``samples`` if it is an integer from 2 to MAX_SAMPLES, else raise InputError."""
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)):
        raise InputError(f"The number of samples must be an integer, got {samples!r}.")
    if not 2 <= samples <= MAX_SAMPLES:
        raise InputError(
            f"The number of samples must be from 2 to {MAX_SAMPLES} (the size of the test split), "
            f"got {samples}. The default is {DEFAULT_SAMPLES}."
        )
    return int(samples)


def reference(dataset: str, samples: int) -> Reference:
    """Return the reference test features and the real-data floor of ``dataset`` at N = ``samples``.

    The result is cached in memory per classifier file, data source and N,
    so a trainer that evaluates every few epochs computes it once.
    """
    from gan import classifier, data

    samples = check_samples(samples)
    spec = classifier.classifier_spec(dataset)
    model = classifier.load_classifier(dataset)
    source = classifier.data_source(dataset)
    key = (str(spec.path), spec.path.stat().st_mtime, source, os.environ.get(data.MNIST_PATH_ENV), samples)
    cached = _REFERENCES.get(key)
    if cached is not None:
        return cached

    train = data.load_images(source, split="train")
    test = data.load_images(source, split="test")
    if samples > min(len(train.images), len(test.images)):
        raise InputError(
            f"{samples} samples exceed the {min(len(train.images), len(test.images))} images of the "
            f"smaller {dataset} split in {source}; use fewer samples."
        )
    rng = np.random.default_rng(REFERENCE_SEED)
    test_index = rng.choice(len(test.images), samples, replace=False)
    train_index = rng.choice(len(train.images), samples, replace=False)
    test_features, _ = classifier.classify(model, test.images[test_index])
    train_images = train.images[train_index]
    train_features, train_probabilities = classifier.classify(model, train_images)
    expected = class_shares(test.labels, classifier.NUM_CLASSES)
    floor = score_set(
        train_images,
        train_features,
        train_probabilities,
        test_features,
        expected,
        labels=train.labels[train_index],
    )
    result = Reference(test_features, expected, floor)
    _REFERENCES[key] = result
    return result


# Generators -------------------------------------------------------------------


def balanced_labels(samples: int, num_classes: int) -> np.ndarray:
    """Return the labels 0, 1, ..., num_classes-1, 0, 1, ... of ``samples`` digits, as int32."""
    return (np.arange(samples) % num_classes).astype(np.int32)


def evaluate_generator(
    generator,
    dataset_name: str,
    n: int = DEFAULT_SAMPLES,
    seed: int = 0,
    labels: np.ndarray | None = None,
) -> QualityReport:
    """Generate ``n`` digits from seeds seed..seed+n-1 and score them with the dataset's classifier.

    A conditional generator gets ``labels`` (default: the classes in turn,
    0, 1, ..., 9, 0, ...) and the report includes its label accuracy. An
    unconditional generator takes no labels. Raises InputError for a dataset
    without a classifier, an invalid ``n`` or seed, or labels that do not fit
    the generator.
    """
    from gan import classifier, generate

    started = time.perf_counter()
    n = check_samples(n)
    seeds = generate.sample_seeds(seed, n)
    num_classes = generate.num_classes_of(generator)
    if num_classes is None and labels is not None:
        raise InputError("This generator is unconditional, so it takes no labels: pass labels=None.")
    if num_classes is not None and labels is None:
        labels = balanced_labels(n, num_classes)

    ref = reference(dataset_name, n)
    images = generate.generate_images(generator, seeds, labels=labels)
    features, probabilities = classifier.classify(classifier.load_classifier(dataset_name), images)
    scores = score_set(
        images,
        features,
        probabilities,
        ref.features,
        ref.expected_shares,
        labels=None if labels is None else np.asarray(labels),
    )
    return QualityReport(
        dataset=dataset_name,
        samples=n,
        seed=seed,
        generated=scores,
        floor=ref.floor,
        seconds=time.perf_counter() - started,
    )


def dataset_of_source(source: str) -> str | None:
    """Return the classifier dataset that a TrainConfig ``data`` value trains on, or None if unknown.

    A name maps to itself. A path maps to "mnist" when it is the file or
    folder that GAN_MNIST_PATH names, and to "fashion_mnist" when it is
    Debian's Fashion-MNIST folder.
    """
    from gan import classifier

    if source in classifier.CLASSIFIERS:
        return source
    path = Path(source).expanduser()
    if not path.exists():
        return None
    local_mnist = os.environ.get("GAN_MNIST_PATH")
    if (
        local_mnist
        and Path(local_mnist).expanduser().exists()
        and path.samefile(Path(local_mnist).expanduser())
    ):
        return "mnist"
    folder = classifier.FASHION_MNIST_FOLDER
    if folder.exists() and path.samefile(folder):
        return "fashion_mnist"
    return None
