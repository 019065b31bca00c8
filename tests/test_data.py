"""Tests for gan.data: every source format, its error messages, and the tf.data pipeline."""

import gzip
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from gan.data import (
    KERAS_DATASETS,
    MNIST_PATH_ENV,
    DigitData,
    load_images,
    make_dataset,
    steps_per_epoch,
)
from gan.errors import DataError, InputError

# Digits per split in the IDX, PNG and .npz files that the tests build, few enough to write quickly.
TRAIN_COUNT = 300
TEST_COUNT = 200
DIGIT_NAMES = tuple(str(digit) for digit in range(10))
FASHION_MNIST_FOLDER = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def digits(mnist_path: Path) -> dict[str, np.ndarray]:
    """Arrays x_train, y_train, x_test and y_test of the real MNIST .npz."""
    with np.load(mnist_path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def write_idx(path: Path, magic: int, array: np.ndarray, *, compress: bool) -> Path:
    """Write ``array`` as an IDX file of unsigned bytes, gzipped to ``path.gz`` if ``compress``."""
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    content = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(content))
    else:
        path.write_bytes(content)
    return path


def write_idx_folder(folder: Path, digits: dict, *, compress: bool) -> Path:
    """Write the first TRAIN_COUNT and TEST_COUNT digits as the four MNIST IDX files."""
    folder.mkdir()
    splits = {"train": ("train", TRAIN_COUNT), "t10k": ("test", TEST_COUNT)}
    for prefix, (split, count) in splits.items():
        images = digits[f"x_{split}"][:count]
        labels = digits[f"y_{split}"][:count]
        write_idx(folder / f"{prefix}-images-idx3-ubyte", 2051, images, compress=compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", 2049, labels, compress=compress)
    return folder


def write_png_folder(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write each image to ``folder/<label>/<index>.png``, with zero-padded indices."""
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        class_folder = folder / str(label)
        class_folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(class_folder / f"{index:05d}.png")
    return folder


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def small_npz(path: Path, digits: dict, **overrides: np.ndarray) -> Path:
    """Write a Keras-layout .npz of the first digits, with some arrays replaced."""
    arrays = {
        "x_train": digits["x_train"][:TRAIN_COUNT],
        "y_train": digits["y_train"][:TRAIN_COUNT],
        "x_test": digits["x_test"][:TEST_COUNT],
        "y_test": digits["y_test"][:TEST_COUNT],
    }
    arrays.update(overrides)
    return write_npz(path, **arrays)


def collect_batches(dataset: tf.data.Dataset) -> list:
    return [tf.nest.map_structure(lambda tensor: tensor.numpy(), batch) for batch in dataset]


def scaled(images: np.ndarray) -> np.ndarray:
    """Scale uint8 images as make_dataset does: float32 in [-1, 1] with a channel axis."""
    return (images.astype(np.float32) / 127.5 - 1.0)[..., np.newaxis]


# Sources


def test_npz_path_loads_train_split(mnist_path, digits):
    data = load_images(str(mnist_path))

    assert isinstance(data, DigitData)
    np.testing.assert_array_equal(data.images, digits["x_train"])
    np.testing.assert_array_equal(data.labels, digits["y_train"])
    assert data.images.dtype == np.uint8
    assert data.labels.dtype == np.int64
    assert data.class_names == DIGIT_NAMES
    assert data.num_classes == 10
    assert data.source == str(mnist_path)


def test_npz_path_loads_test_split(mnist_path, digits):
    data = load_images(mnist_path, split="test")

    np.testing.assert_array_equal(data.images, digits["x_test"])
    np.testing.assert_array_equal(data.labels, digits["y_test"])


def test_mnist_name_reads_env_npz(monkeypatch, mnist_path, digits):
    monkeypatch.setenv(MNIST_PATH_ENV, str(mnist_path))

    train = load_images("mnist")
    test = load_images("mnist", split="test")

    assert "mnist" in KERAS_DATASETS
    np.testing.assert_array_equal(train.images, digits["x_train"])
    np.testing.assert_array_equal(train.labels, digits["y_train"])
    np.testing.assert_array_equal(test.images, digits["x_test"])
    assert train.class_names == DIGIT_NAMES
    assert train.source == "mnist"


def test_mnist_name_reads_env_idx_folder(monkeypatch, tmp_path, digits):
    folder = write_idx_folder(tmp_path / "idx", digits, compress=True)
    monkeypatch.setenv(MNIST_PATH_ENV, str(folder))

    data = load_images("mnist")

    np.testing.assert_array_equal(data.images, digits["x_train"][:TRAIN_COUNT])
    np.testing.assert_array_equal(data.labels, digits["y_train"][:TRAIN_COUNT])


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_idx_folder_matches_npz(tmp_path, digits, compress):
    folder = write_idx_folder(tmp_path / "idx", digits, compress=compress)

    train = load_images(str(folder))
    test = load_images(str(folder), split="test")

    np.testing.assert_array_equal(train.images, digits["x_train"][:TRAIN_COUNT])
    np.testing.assert_array_equal(train.labels, digits["y_train"][:TRAIN_COUNT])
    np.testing.assert_array_equal(test.images, digits["x_test"][:TEST_COUNT])
    np.testing.assert_array_equal(test.labels, digits["y_test"][:TEST_COUNT])
    assert train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64
    assert train.class_names == DIGIT_NAMES


def test_png_folder_matches_npz(tmp_path, digits):
    images = digits["x_train"][:TRAIN_COUNT]
    labels = digits["y_train"][:TRAIN_COUNT]
    folder = write_png_folder(tmp_path / "png", images, labels)
    # Files load class by class, and by file name (the original index) within a class.
    order = np.argsort(labels, kind="stable")

    train = load_images(str(folder))
    test = load_images(str(folder), split="test")

    np.testing.assert_array_equal(train.images, images[order])
    np.testing.assert_array_equal(train.labels, labels[order])
    np.testing.assert_array_equal(test.images, train.images)
    assert train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64
    assert train.class_names == DIGIT_NAMES


def test_png_folder_classes_sorted_by_name(tmp_path, digits):
    folder = tmp_path / "png"
    for name, index in [("zebra", 0), ("ant", 1), ("moth", 2)]:
        (folder / name).mkdir(parents=True)
        Image.fromarray(digits["x_train"][index], mode="L").save(folder / name / "a.png")
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / "README.txt").write_text("top-level files are ignored")

    data = load_images(str(folder))

    assert data.class_names == ("ant", "moth", "zebra")
    assert data.num_classes == 3
    np.testing.assert_array_equal(data.labels, [0, 1, 2])
    np.testing.assert_array_equal(data.images, digits["x_train"][[1, 2, 0]])


def test_png_rgb_converted_to_grayscale(tmp_path, digits):
    image = digits["x_train"][0]
    class_folder = tmp_path / "png" / "5"
    class_folder.mkdir(parents=True)
    Image.fromarray(np.stack([image] * 3, axis=-1), mode="RGB").save(class_folder / "rgb.png")

    data = load_images(str(tmp_path / "png"))

    assert data.images.shape == (1, 28, 28)
    np.testing.assert_array_equal(data.images[0], image)


def test_max_images_keeps_first(mnist_path, digits):
    data = load_images(str(mnist_path), max_images=25)

    np.testing.assert_array_equal(data.images, digits["x_train"][:25])
    np.testing.assert_array_equal(data.labels, digits["y_train"][:25])
    assert data.class_names == DIGIT_NAMES


def test_max_images_above_count_keeps_all(tmp_path, digits):
    path = small_npz(tmp_path / "small.npz", digits)

    data = load_images(str(path), split="test", max_images=10**6)

    assert len(data.images) == TEST_COUNT


@pytest.mark.parametrize("max_images", [0, -3, 2.5, True])
def test_max_images_invalid_raises(mnist_path, max_images):
    with pytest.raises(InputError, match="Invalid max_images"):
        load_images(str(mnist_path), max_images=max_images)


def test_split_invalid_raises(mnist_path):
    with pytest.raises(InputError, match="Invalid split 'validation'"):
        load_images(str(mnist_path), split="validation")


@pytest.mark.skipif(not FASHION_MNIST_FOLDER.is_dir(), reason="Fashion-MNIST is not installed")
def test_fashion_mnist_idx_folder():
    train = load_images(str(FASHION_MNIST_FOLDER))
    test = load_images(str(FASHION_MNIST_FOLDER), split="test")

    assert train.images.shape == (60000, 28, 28)
    assert test.images.shape == (10000, 28, 28)
    assert set(np.unique(train.labels)) == set(range(10))


# Source errors


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_idx_truncated_raises(tmp_path, digits, compress):
    folder = write_idx_folder(tmp_path / "idx", digits, compress=compress)
    images = digits["x_train"][:TRAIN_COUNT]
    header = np.array([2051, TRAIN_COUNT, 28, 28], dtype=">u4").tobytes()
    content = header + images.tobytes()[:1200]
    name = "train-images-idx3-ubyte" + (".gz" if compress else "")
    path = folder / name
    path.write_bytes(gzip.compress(content) if compress else content)

    expected = (
        f"IDX file {path} is truncated: its header declares {TRAIN_COUNT} images of 28x28 "
        f"({TRAIN_COUNT * 784} bytes after the header) but it contains only 1200 bytes. "
        "Download it again."
    )
    with pytest.raises(DataError, match=re.escape(expected)):
        load_images(str(folder))


def test_idx_trailing_bytes_raises(tmp_path, digits):
    folder = write_idx_folder(tmp_path / "idx", digits, compress=False)
    path = folder / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\x00" * 5)

    expected = f"damaged: its header declares {TRAIN_COUNT} labels ({TRAIN_COUNT} bytes"
    with pytest.raises(DataError, match=re.escape(expected)):
        load_images(str(folder))


def test_idx_truncated_gzip_stream_raises(tmp_path, digits):
    folder = write_idx_folder(tmp_path / "idx", digits, compress=True)
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])

    with pytest.raises(DataError, match="could not be decompressed.*Download it again"):
        load_images(str(folder))


def test_idx_wrong_magic_raises(tmp_path, digits):
    folder = write_idx_folder(tmp_path / "idx", digits, compress=False)
    # Swap the labels in for the images: the image file now has the label magic number.
    write_idx(folder / "train-images-idx3-ubyte", 2049, digits["y_train"][:TRAIN_COUNT], compress=False)

    with pytest.raises(DataError, match="magic number 2049.*starts with 2051.*a label file"):
        load_images(str(folder))


def test_idx_labels_wrong_magic_raises(tmp_path, digits):
    folder = write_idx_folder(tmp_path / "idx", digits, compress=True)
    labels = digits["y_train"][:TRAIN_COUNT]
    write_idx(folder / "train-labels-idx1-ubyte", 1234, labels, compress=True)

    with pytest.raises(DataError, match="magic number 1234.*label file starts with 2049"):
        load_images(str(folder))


def test_idx_wrong_image_size_raises(tmp_path, digits):
    folder = write_idx_folder(tmp_path / "idx", digits, compress=True)
    cropped = digits["x_train"][:TRAIN_COUNT, :, :27]
    write_idx(folder / "train-images-idx3-ubyte", 2051, cropped, compress=True)

    with pytest.raises(DataError, match="images of 28x27 pixels, but 28x28 images are expected"):
        load_images(str(folder))


def test_idx_mismatched_counts_raises(tmp_path, digits):
    folder = write_idx_folder(tmp_path / "idx", digits, compress=True)
    labels = digits["y_train"][: TRAIN_COUNT - 1]
    write_idx(folder / "train-labels-idx1-ubyte", 2049, labels, compress=True)

    expected = f"contains {TRAIN_COUNT} images but .*contains {TRAIN_COUNT - 1} labels"
    with pytest.raises(DataError, match=expected):
        load_images(str(folder))


def test_idx_missing_split_file_raises(tmp_path, digits):
    folder = write_idx_folder(tmp_path / "idx", digits, compress=True)
    (folder / "t10k-images-idx3-ubyte.gz").unlink()

    assert len(load_images(str(folder)).images) == TRAIN_COUNT
    with pytest.raises(DataError, match="no t10k-images-idx3-ubyte or .*which the test split needs"):
        load_images(str(folder), split="test")


def test_single_idx_file_raises(tmp_path, digits):
    folder = write_idx_folder(tmp_path / "idx", digits, compress=True)

    with pytest.raises(DataError, match="single IDX file.*Pass the folder"):
        load_images(str(folder / "train-images-idx3-ubyte.gz"))


def test_npz_wrong_image_size_raises(tmp_path, digits):
    padded = np.zeros((10, 32, 32), dtype=np.uint8)
    path = small_npz(tmp_path / "big.npz", digits, x_train=padded, y_train=np.zeros(10, np.uint8))

    with pytest.raises(DataError, match=r"shape \(10, 32, 32\), but grayscale 28x28 images"):
        load_images(str(path))


def test_npz_mismatched_counts_raises(tmp_path, digits):
    path = small_npz(tmp_path / "uneven.npz", digits, y_train=digits["y_train"][:50])

    with pytest.raises(DataError, match=f"Found {TRAIN_COUNT} images but 50 labels in .*uneven.npz"):
        load_images(str(path))


def test_npz_missing_keys_raises(tmp_path, digits):
    path = write_npz(tmp_path / "other.npz", images=digits["x_train"][:5], labels=digits["y_train"][:5])

    with pytest.raises(DataError, match="lacks the arrays x_train, y_train .*contains images, labels"):
        load_images(str(path))


def test_npz_object_arrays_raises(tmp_path, digits):
    images = np.empty(2, dtype=object)
    images[0] = digits["x_train"][0]
    images[1] = digits["x_train"][1]
    path = small_npz(tmp_path / "pickled.npz", digits, x_train=images)

    with pytest.raises(DataError, match="pickled.npz contains object arrays"):
        load_images(str(path))


def test_npz_float_pixels_raises(tmp_path, digits):
    floats = digits["x_train"][:TRAIN_COUNT] / 255.0
    path = small_npz(tmp_path / "floats.npz", digits, x_train=floats)

    with pytest.raises(DataError, match="dtype float64, but uint8 pixel values"):
        load_images(str(path))


def test_file_not_npz_raises(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("not an archive")

    with pytest.raises(DataError, match="notes.npz is not a readable .npz archive"):
        load_images(str(path))


def test_png_wrong_image_size_raises(tmp_path, digits):
    folder = write_png_folder(tmp_path / "png", digits["x_train"][:20], digits["y_train"][:20])
    large = folder / "3" / "large.png"
    Image.new("L", (32, 32)).save(large)

    with pytest.raises(DataError, match=re.escape(f"Image {large} is 32x32 pixels, but 28x28")):
        load_images(str(folder))


def test_png_non_image_file_raises(tmp_path, digits):
    folder = write_png_folder(tmp_path / "png", digits["x_train"][:20], digits["y_train"][:20])
    notes = folder / "1" / "notes.txt"
    notes.write_text("labels checked by hand")

    with pytest.raises(DataError, match=re.escape(f"File {notes} is not an image")):
        load_images(str(folder))


def test_png_empty_class_folder_raises(tmp_path, digits):
    folder = write_png_folder(tmp_path / "png", digits["x_train"][:20], digits["y_train"][:20])
    empty = folder / "extra"
    empty.mkdir()

    with pytest.raises(DataError, match=re.escape(f"Class folder {empty} contains no PNG images")):
        load_images(str(folder))


def test_empty_folder_raises(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()

    with pytest.raises(DataError, match="contains no MNIST IDX files .*and no class subfolders"):
        load_images(str(folder))


@pytest.mark.parametrize("name", ["missing.npz", "missing_folder/"])
def test_missing_path_raises(tmp_path, name):
    source = str(tmp_path / name)

    with pytest.raises(DataError, match=re.escape(f"Data source {source} was not found")):
        load_images(source)


def test_unknown_source_name_raises():
    with pytest.raises(DataError, match="Unknown data source 'mnsit'.*'fashion_mnist'") as error:
        load_images("mnsit")
    assert "Did you mean 'mnist'?" in str(error.value)


def test_empty_source_raises():
    with pytest.raises(DataError, match="The data source is empty"):
        load_images("")


def test_env_path_missing_raises(monkeypatch, tmp_path):
    nowhere = tmp_path / "nowhere" / "mnist.npz"
    monkeypatch.setenv(MNIST_PATH_ENV, str(nowhere))

    expected = f"{MNIST_PATH_ENV} is set to {nowhere}, but no file or folder exists there"
    with pytest.raises(DataError, match=re.escape(expected)):
        load_images("mnist")


# make_dataset


def test_dataset_scales_real_digits(digits):
    images = digits["x_train"]
    dataset = make_dataset(images, digits["y_train"], batch_size=512, seed=3, epoch=0)

    batches = np.concatenate(collect_batches(dataset))
    order = np.random.default_rng([3, 0]).permutation(len(images))

    assert batches.dtype == np.float32
    assert batches.shape == (len(images), 28, 28, 1)
    assert batches.min() == -1.0
    assert batches.max() == 1.0
    np.testing.assert_array_equal(batches, scaled(images[order]))


def test_dataset_keeps_partial_last_batch(digits):
    images = digits["x_train"][:100]
    dataset = make_dataset(images, None, batch_size=32, seed=0, epoch=0)

    sizes = [batch.shape[0] for batch in collect_batches(dataset)]

    assert sizes == [32, 32, 32, 4]
    assert steps_per_epoch(100, 32) == 4
    assert dataset.element_spec.shape.as_list() == [None, 28, 28, 1]
    assert dataset.element_spec.dtype == tf.float32


def test_dataset_order_depends_on_seed_and_epoch(digits):
    images = digits["x_train"][:200]
    labels = digits["y_train"][:200]

    def epoch_batches(seed: int, epoch: int) -> np.ndarray:
        dataset = make_dataset(images, labels, batch_size=64, seed=seed, epoch=epoch)
        return np.concatenate(collect_batches(dataset))

    first = epoch_batches(seed=7, epoch=1)

    np.testing.assert_array_equal(first, epoch_batches(seed=7, epoch=1))
    assert not np.array_equal(first, epoch_batches(seed=7, epoch=2))
    assert not np.array_equal(first, epoch_batches(seed=8, epoch=1))
    # Same images, only reordered.
    np.testing.assert_array_equal(np.sort(first, axis=None), np.sort(scaled(images), axis=None))


def test_dataset_skip_batches_drops_first(digits):
    images = digits["x_train"][:150]
    arguments = dict(batch_size=32, seed=11, epoch=4, conditional=True)

    full = collect_batches(make_dataset(images, digits["y_train"][:150], **arguments))
    resumed = collect_batches(make_dataset(images, digits["y_train"][:150], skip_batches=2, **arguments))
    finished = collect_batches(make_dataset(images, digits["y_train"][:150], skip_batches=5, **arguments))

    assert len(full) == 5
    assert len(resumed) == 3
    for expected, actual in zip(full[2:], resumed, strict=True):
        np.testing.assert_array_equal(actual[0], expected[0])
        np.testing.assert_array_equal(actual[1], expected[1])
    assert finished == []


def test_dataset_conditional_labels_match_images(digits):
    images = digits["x_train"][:300]
    labels = digits["y_train"][:300]
    dataset = make_dataset(images, labels, batch_size=128, seed=5, epoch=2, conditional=True)

    batches = collect_batches(dataset)
    order = np.random.default_rng([5, 2]).permutation(len(images))

    image_spec, label_spec = dataset.element_spec
    assert image_spec.shape.as_list() == [None, 28, 28, 1]
    assert label_spec.shape.as_list() == [None]
    assert label_spec.dtype == tf.int32
    batch_images = np.concatenate([batch[0] for batch in batches])
    batch_labels = np.concatenate([batch[1] for batch in batches])
    assert batch_labels.dtype == np.int32
    np.testing.assert_array_equal(batch_images, scaled(images[order]))
    np.testing.assert_array_equal(batch_labels, labels[order])


def test_dataset_keras_fit_traces_once(digits):
    """Keras traces train_step once for two epochs whose last batches are partial."""
    images = digits["x_train"][:100]
    traces = []

    class CountingModel(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, inputs):
            return self.dense(keras.ops.reshape(inputs, (-1, 28 * 28)))

        def train_step(self, batch):
            traces.append(batch.shape)
            return {"mean": keras.ops.mean(self(batch))}

    model = CountingModel()
    # Build the weights first: a tf.function that creates variables is traced a second time.
    model(np.zeros((1, 28, 28, 1), dtype=np.float32))
    model.compile(optimizer="sgd")
    for epoch in range(2):
        dataset = make_dataset(images, None, batch_size=32, seed=0, epoch=epoch)
        model.fit(dataset, epochs=1, verbose=0, shuffle=False)

    assert len(traces) == 1
    assert traces[0].as_list() == [None, 28, 28, 1]


def test_dataset_tf_function_traces_once(digits):
    images = digits["x_train"][:100]
    traces = []

    @tf.function
    def sum_next_batch(iterator):
        traces.append(1)
        return tf.reduce_sum(next(iterator))

    for epoch in range(2):
        iterator = iter(make_dataset(images, None, batch_size=32, seed=0, epoch=epoch))
        for _ in range(steps_per_epoch(len(images), 32)):
            sum_next_batch(iterator)

    assert len(traces) == 1


def test_dataset_invalid_arguments_raise(digits):
    images = digits["x_train"][:10]
    labels = digits["y_train"][:10]

    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        make_dataset(images, labels, batch_size=0, seed=0, epoch=0)
    with pytest.raises(ValueError, match="skip_batches must be from 0 to 2"):
        make_dataset(images, labels, batch_size=8, seed=0, epoch=0, skip_batches=3)
    with pytest.raises(ValueError, match="conditional=True needs labels"):
        make_dataset(images, None, batch_size=8, seed=0, epoch=0, conditional=True)
    with pytest.raises(ValueError, match=r"labels must have shape \(10,\)"):
        make_dataset(images, labels[:9], batch_size=8, seed=0, epoch=0)
    with pytest.raises(ValueError, match="uint8 array of shape"):
        make_dataset(images.astype(np.float32), labels, batch_size=8, seed=0, epoch=0)


@pytest.mark.parametrize(
    ("num_images", "batch_size", "expected"),
    [(100, 32, 4), (96, 32, 3), (1, 32, 1), (0, 32, 0), (60000, 64, 938)],
)
def test_steps_per_epoch_rounds_up(num_images, batch_size, expected):
    assert steps_per_epoch(num_images, batch_size) == expected


def test_dataset_runs_without_the_autotuner():
    """The autotuner's thread can hold up the end of an epoch, so the pipeline is fixed-size."""
    images = np.zeros((10, 28, 28), dtype=np.uint8)
    dataset = make_dataset(images, None, batch_size=4, seed=0, epoch=0)
    assert dataset.options().autotune.enabled is False
    assert [len(batch) for batch in dataset] == [4, 4, 2]
