"""The shipped classifiers, evaluate_generator and ``python -m gan evaluate`` on small real runs."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from test_train import tiny_config

from gan import classifier, metrics, runs
from gan.cli import EXIT_OK, EXIT_USAGE, main
from gan.data import load_images
from gan.errors import InputError
from gan.generate import load_generator
from gan.train import train

REPOSITORY = Path(__file__).resolve().parents[1]
SAMPLES = 200
MAX_CLASSIFIER_BYTES = 2 * 1024 * 1024


@pytest.fixture(autouse=True)
def local_mnist(mnist_path, monkeypatch):
    monkeypatch.setenv("GAN_MNIST_PATH", str(mnist_path))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, mnist_path):
    os.environ["GAN_MNIST_PATH"] = str(mnist_path)
    run_dir = runs.create_run(tmp_path_factory.mktemp("evaluate") / "tiny", tiny_config())
    assert train(run_dir) == "finished"
    return run_dir


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory, mnist_path):
    os.environ["GAN_MNIST_PATH"] = str(mnist_path)
    run_dir = runs.create_run(
        tmp_path_factory.mktemp("evaluate") / "classes", tiny_config(model="conditional")
    )
    assert train(run_dir) == "finished"
    return run_dir


@pytest.fixture(scope="module")
def mnist_test_split(mnist_path):
    """The 10,000 MNIST test digits with the shipped classifier's features and probabilities."""
    digits = load_images(str(mnist_path), split="test")
    features, probabilities = classifier.classify(classifier.load_classifier("mnist"), digits.images)
    return digits, features, probabilities


# Shipped classifiers ------------------------------------------------------------


def test_mnist_classifier_accuracy(mnist_test_split):
    digits, _, probabilities = mnist_test_split
    assert len(digits.labels) == 10_000
    assert classifier.CLASSIFIERS["mnist"].path.stat().st_size < MAX_CLASSIFIER_BYTES
    assert np.mean(probabilities.argmax(axis=1) == digits.labels) >= 0.985


def test_fashion_mnist_classifier_accuracy():
    if not classifier.FASHION_MNIST_FOLDER.is_dir():
        if os.environ.get("CI"):
            pytest.fail(
                f"Fashion-MNIST is missing from {classifier.FASHION_MNIST_FOLDER}: .ci/run installs it"
            )
        pytest.skip(
            f"Fashion-MNIST is not installed in {classifier.FASHION_MNIST_FOLDER}: "
            "apt-get install dataset-fashion-mnist"
        )
    spec = classifier.CLASSIFIERS["fashion_mnist"]
    assert spec.path.stat().st_size < MAX_CLASSIFIER_BYTES
    assert classifier.measure_accuracy("fashion_mnist") >= 0.88


def test_classifier_features_layer():
    model = keras.models.load_model(classifier.CLASSIFIERS["mnist"].path, compile=False)
    assert model.get_layer(classifier.FEATURES_LAYER).units == classifier.FEATURE_DIM


def test_classify_equals_eager_calls(mnist_test_split):
    """The compiled call gives the eager model's outputs bit for bit, the partial last batch included."""
    digits, _, _ = mnist_test_split
    images = digits.images[: classifier.PREDICT_BATCH + 7]
    model = classifier.load_classifier("mnist")
    features, probabilities = classifier.classify(model, images)
    pixels = classifier.as_model_input(images)
    eager = [model(pixels[start : start + classifier.PREDICT_BATCH], training=False) for start in (0, 500)]
    assert features.shape == (len(images), classifier.FEATURE_DIM)
    assert np.array_equal(features, np.concatenate([np.asarray(part[0], np.float64) for part in eager]))
    assert np.array_equal(probabilities, np.concatenate([np.asarray(part[1], np.float64) for part in eager]))
    # Batches of 500 and of 7 images ran through one trace.
    assert classifier._compiled_call(model).experimental_get_tracing_count() == 1


def test_unknown_dataset_classifier_raises():
    with pytest.raises(InputError, match="No classifier is shipped for dataset 'cifar10'"):
        classifier.load_classifier("cifar10")


# Metrics on real digits ------------------------------------------------------------


def test_frechet_identical_real_digits_zero(mnist_test_split):
    _, features, _ = mnist_test_split
    assert metrics.frechet_distance(features[:1000], features[:1000]) == pytest.approx(0.0, abs=1e-6)


def test_frechet_zeros_against_ones_large(mnist_test_split):
    digits, features, _ = mnist_test_split
    zeros, ones = features[digits.labels == 0], features[digits.labels == 1]
    between_classes = metrics.frechet_distance(zeros, ones)
    half = len(zeros) // 2
    within_class = metrics.frechet_distance(zeros[:half], zeros[half:])
    assert between_classes > 20 * within_class


def test_real_floor_values():
    reference = metrics.reference("mnist", SAMPLES)
    floor = reference.floor

    assert reference.features.shape == (SAMPLES, classifier.FEATURE_DIM)
    assert sum(reference.expected_shares) == pytest.approx(1.0)
    assert floor.label_accuracy > 0.95
    assert floor.class_entropy_bits > 3.2
    assert floor.max_class_deviation < 0.05
    assert floor.confidence > 0.9
    assert 0.2 < floor.diversity < 0.5
    assert math.isfinite(floor.kid)
    assert math.isfinite(floor.frechet_distance)


def test_real_floor_cached():
    assert metrics.reference("mnist", SAMPLES) is metrics.reference("mnist", SAMPLES)


# evaluate_generator -----------------------------------------------------------------


def test_evaluate_generator_tiny_run(trained_run):
    generator = load_generator(trained_run)
    report = metrics.evaluate_generator(generator, "mnist", n=SAMPLES, seed=0)

    assert report.samples == SAMPLES
    assert report.floor == metrics.reference("mnist", SAMPLES).floor
    # Two epochs on 256 digits draw blobs, far from real digits.
    assert report.generated.frechet_distance > 10 * report.floor.frechet_distance
    assert report.generated.kid > report.floor.kid
    assert report.generated.label_accuracy is None
    assert len(report.generated.class_shares) == 10
    assert 0 <= report.generated.diversity <= 1
    assert 0.1 <= report.generated.confidence <= 1


def test_evaluate_generator_repeatable(trained_run):
    generator = load_generator(trained_run)
    first = metrics.evaluate_generator(generator, "mnist", n=SAMPLES, seed=3)
    second = metrics.evaluate_generator(generator, "mnist", n=SAMPLES, seed=3)
    assert first.generated == second.generated


def test_evaluate_generator_conditional_labels(conditional_run):
    generator = load_generator(conditional_run)
    report = metrics.evaluate_generator(generator, "mnist", n=SAMPLES, seed=0)
    assert report.generated.label_accuracy is not None
    assert 0 <= report.generated.label_accuracy <= 1


def test_evaluate_generator_rejects_labels_unconditional(trained_run):
    generator = load_generator(trained_run)
    with pytest.raises(InputError, match="unconditional, so it takes no labels"):
        metrics.evaluate_generator(generator, "mnist", n=SAMPLES, labels=np.zeros(SAMPLES, np.int32))


def test_evaluate_generator_rejects_one_sample(trained_run):
    generator = load_generator(trained_run)
    with pytest.raises(InputError, match="number of samples must be from 2 to 10000"):
        metrics.evaluate_generator(generator, "mnist", n=1)


# Command line -------------------------------------------------------------------------


def test_cli_evaluate_table(trained_run, capsys):
    assert main(["evaluate", "--run-dir", str(trained_run), "--samples", str(SAMPLES)]) == EXIT_OK
    output = capsys.readouterr().out
    steps = [info.step for info in runs_checkpoints(trained_run)]
    assert f"checkpoint at step {steps[-1]}" in output
    assert "real-data floor" in output
    assert "Frechet distance" in output
    assert "KID standard error" in output
    assert "label accuracy" not in output


def runs_checkpoints(run_dir):
    from gan import checkpoints

    return checkpoints.list_checkpoints(run_dir / runs.CHECKPOINTS_DIR)


def test_cli_evaluate_json_checkpoint(trained_run, capsys):
    step = runs_checkpoints(trained_run)[0].step
    argv = ["evaluate", "--run-dir", str(trained_run), "--checkpoint", str(step)]
    assert main([*argv, "--samples", str(SAMPLES), "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["checkpoint"] == step
    assert report["dataset"] == "mnist"
    assert report["samples"] == SAMPLES
    assert report["generated"]["frechet_distance"] > report["floor"]["frechet_distance"]
    assert report["floor"]["label_accuracy"] > 0.95


def test_cli_evaluate_generator_file(trained_run, capsys):
    generator_file = trained_run / runs.GENERATOR_FILE
    argv = ["evaluate", "--generator", str(generator_file), "--samples", str(SAMPLES), "--json"]
    assert main(argv) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["generator"] == str(generator_file)
    assert report["generated"]["label_accuracy"] is None


def test_cli_evaluate_conditional_label_accuracy(conditional_run, capsys):
    assert main(["evaluate", "--run-dir", str(conditional_run), "--samples", str(SAMPLES)]) == EXIT_OK
    assert "label accuracy" in capsys.readouterr().out


def evaluate_error(argv, capsys) -> str:
    assert main(["evaluate", *argv]) == EXIT_USAGE
    return capsys.readouterr().err


def test_cli_evaluate_missing_run(tmp_path, capsys):
    message = evaluate_error(["--run-dir", str(tmp_path / "nothing")], capsys)
    assert f"{tmp_path / 'nothing'} is not a run folder" in message


def test_cli_evaluate_missing_checkpoint(trained_run, capsys):
    message = evaluate_error(["--run-dir", str(trained_run), "--checkpoint", "3"], capsys)
    assert "no checkpoint at step 3" in message
    assert "available steps" in message


@pytest.mark.parametrize("samples", ["1", "0", "10001", "1000000000"])
def test_cli_evaluate_samples_out_of_range(trained_run, capsys, samples):
    message = evaluate_error(["--run-dir", str(trained_run), "--samples", samples], capsys)
    assert (
        f"--samples must be an integer from 2 to 10000 (the test images to compare with), got {samples}"
        in message
    )


def test_cli_evaluate_checkpoint_with_generator(trained_run, capsys):
    argv = ["--generator", str(trained_run / runs.GENERATOR_FILE), "--checkpoint", "5"]
    assert "--checkpoint goes with --run-dir" in evaluate_error(argv, capsys)


def test_cli_evaluate_data_without_classifier(tmp_path, capsys):
    folder = tmp_path / "pngs"
    folder.mkdir()
    run_dir = runs.create_run(tmp_path / "png-run", tiny_config(data=str(folder)))
    message = evaluate_error(["--run-dir", str(run_dir)], capsys)
    assert "which has no shipped classifier" in message
    assert "pass --dataset mnist or --dataset fashion_mnist" in message


def test_cli_evaluate_missing_classifier(trained_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(classifier, "CLASSIFIERS_DIR", tmp_path)
    message = evaluate_error(["--run-dir", str(trained_run), "--samples", str(SAMPLES)], capsys)
    assert f"The mnist classifier {tmp_path / 'mnist.keras'} is missing" in message
    assert "python -m gan.classifier train --dataset mnist" in message


def test_cli_evaluate_subprocess(trained_run, mnist_path):
    env = {**os.environ, "GAN_MNIST_PATH": str(mnist_path)}
    command = [sys.executable, "-m", "gan", "evaluate", "--run-dir", str(trained_run), "--samples", "100"]
    result = subprocess.run(
        [*command, "--json"], capture_output=True, text=True, cwd=REPOSITORY, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["samples"] == 100
    assert report["floor"]["frechet_distance"] < report["generated"]["frechet_distance"]


def test_cli_evaluate_help_without_tensorflow():
    script = (
        "import sys\n"
        "from gan.cli import main\n"
        "try:\n"
        "    main(['evaluate', '--help'])\n"
        "except SystemExit as error:\n"
        "    assert error.code == 0, error.code\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('tensorflow', 'keras')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPOSITORY, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--samples N" in result.stdout
    assert result.stdout.strip().endswith("[]")
