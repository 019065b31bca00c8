"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest

# Same as gan.data.MNIST_PATH_ENV, without importing TensorFlow for every test run.
MNIST_PATH_ENV = "GAN_MNIST_PATH"

# Offline MNIST copy next to the repository: 10000 train and 10000 test digits in Keras layout.
DEFAULT_MNIST_PATH = Path(__file__).resolve().parents[2] / "shared/data/mnist/mnist.npz"


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    """Path of a Keras-layout MNIST .npz: GAN_MNIST_PATH if set, else DEFAULT_MNIST_PATH."""
    path = Path(os.environ.get(MNIST_PATH_ENV) or DEFAULT_MNIST_PATH)
    if not path.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"No MNIST .npz at {path}: CI must set {MNIST_PATH_ENV}")
        pytest.skip(f"No MNIST .npz at {path}: set {MNIST_PATH_ENV} to a Keras-layout mnist.npz")
    return path
