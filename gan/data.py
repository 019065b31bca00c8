"""Load 28x28 grayscale digit images from Keras datasets, .npz files, IDX folders or PNG
class folders, and batch them for one training epoch with tf.data."""

from __future__ import annotations

import difflib
import gzip
import os
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from gan.config import KERAS_DATASETS
from gan.errors import DataError, InputError

__all__ = [
    "KERAS_DATASETS",
    "MNIST_PATH_ENV",
    "DigitData",
    "load_images",
    "make_dataset",
    "steps_per_epoch",
]

MNIST_PATH_ENV = "GAN_MNIST_PATH"

SPLITS = ("train", "test")
IMAGE_SIZE = 28
DIGIT_NAMES = tuple(str(digit) for digit in range(10))
# Label order from the Fashion-MNIST documentation in keras.datasets.fashion_mnist.
FASHION_MNIST_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# IDX magic numbers: two zero bytes, type code 0x08 (unsigned byte), number of dimensions.
IDX_IMAGES_MAGIC = 0x0803  # 2051
IDX_LABELS_MAGIC = 0x0801  # 2049
IDX_FILE_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_IDX_FILE_NAMES = IDX_FILE_NAMES["train"] + IDX_FILE_NAMES["test"]

ACCEPTED_SOURCES = (
    "'mnist', 'fashion_mnist', the path of a Keras-layout .npz file, a folder of MNIST IDX "
    "files, or a folder with one subfolder of 28x28 PNG images per class"
)


@dataclass(frozen=True, eq=False)
class DigitData:
    """Images with their class labels, as loaded from one source and split."""

    images: np.ndarray  # uint8, shape (N, 28, 28)
    labels: np.ndarray  # int64, shape (N,), indices into class_names
    class_names: tuple[str, ...]
    source: str  # the source string given to load_images

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_images(
    source: str | os.PathLike[str],
    *,
    split: str = "train",
    max_images: int | None = None,
) -> DigitData:
    """Load one split of a digit dataset and check that it contains 28x28 uint8 images.

    ``source`` is a name from KERAS_DATASETS or a path. A name wins over a folder of the same
    name in the working directory (use ``./mnist`` for the folder). For "mnist", the
    environment variable GAN_MNIST_PATH, when set, names a local copy to load instead of the
    Keras download. PNG class folders have no splits, so both splits return all their images.
    ``max_images`` keeps the first N images in source order.

    Raises DataError for a source that is missing or does not contain valid images, and
    InputError for an invalid ``split`` or ``max_images``.
    """
    if split not in SPLITS:
        raise InputError(f"Invalid split {split!r}: use 'train' or 'test'.")
    if max_images is not None:
        if isinstance(max_images, bool) or not isinstance(max_images, (int, np.integer)):
            raise InputError(f"Invalid max_images {max_images!r}: use a positive integer.")
        if max_images < 1:
            raise InputError(f"Invalid max_images {max_images}: use a positive integer.")

    source = os.fspath(source)
    if source in KERAS_DATASETS:
        images, labels, class_names = _load_keras_dataset(source, split)
    else:
        images, labels, class_names = _load_path(_existing_path(source), split)
    data = DigitData(images=images, labels=labels, class_names=class_names, source=source)

    if max_images is not None and max_images < len(images):
        # Copies, so that the arrays of the full dataset can be freed.
        data = replace(data, images=images[:max_images].copy(), labels=labels[:max_images].copy())
    return data


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray | None,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    skip_batches: int = 0,
    conditional: bool = False,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Build the batches of one epoch: images as float32 in [-1, 1], shape (B, 28, 28, 1).

    The order is a permutation from ``np.random.default_rng([seed, epoch])``, so it depends
    only on (seed, epoch) and a resumed run gets the same batches as an uninterrupted one.
    The last batch may be smaller than ``batch_size``, and the batch dimension of the
    element_spec is None, so a tf.function over these datasets traces once for all epochs.
    ``drop_remainder`` leaves that partial batch out, so every batch has ``batch_size``
    images; a different remainder is left out each epoch because the order changes.
    ``skip_batches`` drops the first batches of the epoch. With ``conditional`` the elements
    are ``(images, labels)`` with int32 labels of shape (B,). Otherwise ``labels`` may be None.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"images must be a uint8 array of shape (N, 28, 28), got {images.dtype} {images.shape}."
        )
    num_images = len(images)
    if conditional and labels is None:
        raise ValueError("conditional=True needs labels, but labels is None.")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (num_images,):
            raise ValueError(
                f"labels must have shape ({num_images},) to match the images, got {labels.shape}."
            )
    num_batches = steps_per_epoch(num_images, batch_size, drop_remainder=drop_remainder)
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be non-negative, got seed={seed}, epoch={epoch}.")
    if not 0 <= skip_batches <= num_batches:
        raise ValueError(
            f"skip_batches must be from 0 to {num_batches} (the batches in one epoch), got {skip_batches}."
        )

    order = np.random.default_rng([seed, epoch]).permutation(num_images)
    order = order[skip_batches * batch_size :]

    # Pin the tensors to the CPU, where tf.data runs. Converting the images costs one copy
    # per call (about 40 ms for 60000 digits), far less than training on one epoch.
    with tf.device("/CPU:0"):
        images_tensor = tf.constant(images)
        labels_tensor = tf.constant(labels, dtype=tf.int32) if conditional else None

    def gather_batch(indices: tf.Tensor):
        batch = tf.cast(tf.gather(images_tensor, indices), tf.float32) / 127.5 - 1.0
        batch = tf.expand_dims(batch, axis=-1)
        if conditional:
            return batch, tf.gather(labels_tensor, indices)
        return batch

    dataset = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=drop_remainder)
    # One gather and one cast per batch take well under a millisecond, so a
    # fixed prefetch of two batches keeps the step fed. tf.data's autotuner
    # is off: its background thread made the end of an epoch wait for up to
    # about 12 s (measured by bench/train_speed.py, TensorFlow 2.21).
    dataset = dataset.map(gather_batch).prefetch(2)
    options = tf.data.Options()
    options.autotune.enabled = False
    # Under MultiWorkerMirroredStrategy each worker builds this whole pipeline and keeps its own
    # share of every batch. Set here because tensors in memory have no files to shard by.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def steps_per_epoch(num_images: int, batch_size: int, drop_remainder: bool = False) -> int:
    """Return the number of batches in one epoch, counting a final partial batch unless ``drop_remainder``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
    if num_images < 0:
        raise ValueError(f"num_images must be non-negative, got {num_images}.")
    if drop_remainder:
        return num_images // batch_size
    return -(-num_images // batch_size)


# Sources


def _existing_path(source: str) -> Path:
    if not source.strip():
        raise DataError(f"The data source is empty. Use {ACCEPTED_SOURCES}.")
    path = Path(source).expanduser()
    if path.exists():
        return path

    looks_like_path = "/" in source or os.sep in source or source.startswith((".", "~"))
    if looks_like_path or path.suffix:
        raise DataError(
            f"Data source {source} was not found: no file or folder exists at that path. "
            "Check the path, or pass another source."
        )
    close_names = difflib.get_close_matches(source, KERAS_DATASETS, n=1)
    hint = f" Did you mean {close_names[0]!r}?" if close_names else ""
    raise DataError(
        f"Unknown data source {source!r}: it is neither a dataset name nor an existing path. "
        f"Use {ACCEPTED_SOURCES}.{hint}"
    )


def _load_keras_dataset(name: str, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    if name == "mnist":
        local_copy = os.environ.get(MNIST_PATH_ENV)
        if local_copy:
            path = Path(local_copy).expanduser()
            if not path.exists():
                raise DataError(
                    f"{MNIST_PATH_ENV} is set to {local_copy}, but no file or folder exists "
                    "there. Point it at a Keras-layout mnist.npz or a folder of MNIST IDX "
                    "files, or unset it to let Keras download MNIST."
                )
            return _load_path(path, split)

    try:
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as err:  # keras.utils.get_file raises a bare Exception on a failed download.
        local_hint = f", or set {MNIST_PATH_ENV} to one" if name == "mnist" else ""
        raise DataError(
            f"Keras could not load the {name} dataset: {err}. Check the internet connection, "
            f"or pass the path of a local copy{local_hint}."
        ) from err

    images, labels = (x_train, y_train) if split == "train" else (x_test, y_test)
    images, labels = _checked_arrays(images, labels, f"the Keras {name} {split} split")
    class_names = DIGIT_NAMES if name == "mnist" else FASHION_MNIST_NAMES
    return images, labels, class_names


def _load_path(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    if path.is_file():
        if path.name.removesuffix(".gz") in ALL_IDX_FILE_NAMES:
            raise DataError(
                f"{path} is a single IDX file, but a source needs all of them. "
                f"Pass the folder that contains it: {path.parent}"
            )
        images, labels = _load_npz(path, split)
        return images, labels, _numbered_class_names(labels)

    if not path.is_dir():
        raise DataError(f"{path} is neither a file nor a folder. Use {ACCEPTED_SOURCES}.")

    if _contains_idx_files(path):
        images, labels = _load_idx_folder(path, split)
        return images, labels, _numbered_class_names(labels)
    if _class_folders(path):
        return _load_png_folder(path)
    raise DataError(
        f"Folder {path} contains no MNIST IDX files (such as train-images-idx3-ubyte.gz) and "
        "no class subfolders of PNG images. Add one of these, or pass another source."
    )


def _numbered_class_names(labels: np.ndarray) -> tuple[str, ...]:
    """Name the classes of numeric labels "0", "1", ..., at least "0" to "9" as in MNIST."""
    num_classes = max(10, int(labels.max()) + 1)
    return tuple(str(label) for label in range(num_classes))


def _checked_arrays(images: np.ndarray, labels: np.ndarray, origin: str) -> tuple[np.ndarray, np.ndarray]:
    """Check images and labels loaded as arrays, named ``origin`` in error messages."""
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(
            f"Images in {origin} have shape {images.shape}, but grayscale 28x28 images of "
            "shape (N, 28, 28) are expected. Resize the images to 28x28 pixels."
        )
    if len(images) == 0:
        raise DataError(f"Found no images in {origin}. Pass a source with at least one image.")
    if images.dtype != np.uint8:
        in_byte_range = images.dtype.kind in "iu" and images.min() >= 0 and images.max() <= 255
        if not in_byte_range:
            raise DataError(
                f"Images in {origin} have dtype {images.dtype}, but uint8 pixel values from "
                "0 to 255 are expected. Convert the images to uint8."
            )
        images = images.astype(np.uint8)

    if labels.ndim != 1:
        raise DataError(
            f"Labels in {origin} have shape {labels.shape}, but one integer per image, "
            "of shape (N,), is expected."
        )
    if len(images) != len(labels):
        raise DataError(
            f"Found {len(images)} images but {len(labels)} labels in {origin}. "
            "Each image needs exactly one label: check that the files belong together."
        )
    if labels.dtype.kind not in "iu" or labels.min() < 0:
        raise DataError(
            f"Labels in {origin} must be non-negative integers, but found dtype "
            f"{labels.dtype} with minimum {labels.min()}. Store class indices 0, 1, 2, ..."
        )
    return images, labels.astype(np.int64)


# Keras-layout .npz


def _load_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_key, labels_key = f"x_{split}", f"y_{split}"
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(
            f"File {path} is not a readable .npz archive ({err}). Pass a Keras-layout .npz "
            "with the arrays x_train, y_train, x_test and y_test."
        ) from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"File {path} contains a single array, but a Keras-layout .npz with the arrays "
            "x_train, y_train, x_test and y_test is expected. Save them with numpy.savez."
        )

    with archive:
        missing = [key for key in (images_key, labels_key) if key not in archive.files]
        if missing:
            raise DataError(
                f"File {path} lacks the arrays {', '.join(missing)} for the {split} split: it "
                f"contains {', '.join(archive.files) or 'no arrays'}. A Keras-layout .npz has "
                "x_train, y_train, x_test and y_test."
            )
        try:
            images = archive[images_key]
            labels = archive[labels_key]
        except ValueError as err:
            # np.load raises ValueError for object arrays, which only pickle can restore.
            raise DataError(
                f"File {path} contains object arrays, which are not loaded because "
                f"unpickling can run arbitrary code ({err}). Save the images and labels as "
                "plain numeric arrays (uint8 images, integer labels)."
            ) from err
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise DataError(
                f"File {path} is damaged: reading {images_key} or {labels_key} failed ({err}). "
                "Create or download the file again."
            ) from err

    return _checked_arrays(images, labels, f"{path} ({images_key}, {labels_key})")


# IDX folders


def _contains_idx_files(folder: Path) -> bool:
    return any((folder / name).is_file() or (folder / f"{name}.gz").is_file() for name in ALL_IDX_FILE_NAMES)


def _load_idx_folder(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name = IDX_FILE_NAMES[split]
    images_path = _find_idx_file(folder, images_name, split)
    labels_path = _find_idx_file(folder, labels_name, split)
    images = _parse_idx_images(_read_idx_file(images_path), images_path)
    labels = _parse_idx_labels(_read_idx_file(labels_path), labels_path)
    if len(images) != len(labels):
        raise DataError(
            f"IDX file {images_path} contains {len(images)} images but {labels_path} contains "
            f"{len(labels)} labels. Each image needs exactly one label: check that the files "
            "belong together, or download them again."
        )
    return _checked_arrays(images, labels, f"IDX files {images_path} and {labels_path}")


def _find_idx_file(folder: Path, name: str, split: str) -> Path:
    """Find ``name`` or ``name.gz`` in ``folder``, preferring the uncompressed file."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    found = sorted(child.name for child in folder.iterdir())
    raise DataError(
        f"Folder {folder} has no {name} or {name}.gz, which the {split} split needs. "
        f"It contains {', '.join(found)}. Add the missing MNIST-format file."
    )


def _read_idx_file(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as file:
            return file.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"IDX file {path} could not be decompressed ({err}). Download it again.") from err


def _read_idx_header(data: bytes, path: Path, magic: int, kind: str, ndim: int) -> list[int]:
    """Check the magic number and return the dimensions of an IDX file of unsigned bytes."""
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(
            f"IDX file {path} is truncated: it contains only {len(data)} bytes, fewer than the "
            f"{header_size}-byte header of an IDX {kind} file. Download it again."
        )
    found_magic = int(np.frombuffer(data, dtype=">u4", count=1)[0])
    if found_magic != magic:
        other = {IDX_IMAGES_MAGIC: "an image file", IDX_LABELS_MAGIC: "a label file"}
        found_kind = other.get(found_magic, "not an IDX file of unsigned bytes")
        raise DataError(
            f"IDX file {path} has the magic number {found_magic}, but an IDX {kind} file "
            f"starts with {magic}. This one is {found_kind}. Check the file name, or "
            "download the file again."
        )
    return [int(size) for size in np.frombuffer(data, dtype=">u4", count=ndim, offset=4)]


def _parse_idx_images(data: bytes, path: Path) -> np.ndarray:
    count, rows, columns = _read_idx_header(data, path, IDX_IMAGES_MAGIC, "image", ndim=3)
    if (rows, columns) != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(
            f"IDX file {path} contains images of {rows}x{columns} pixels, but 28x28 images are "
            "expected. Resize the images to 28x28 pixels, or pass another source."
        )
    pixels_size = count * rows * columns
    _check_idx_size(data, path, 16, pixels_size, f"{count} images of {rows}x{columns}")
    pixels = np.frombuffer(data, dtype=np.uint8, count=pixels_size, offset=16)
    return pixels.reshape(count, rows, columns).copy()


def _parse_idx_labels(data: bytes, path: Path) -> np.ndarray:
    (count,) = _read_idx_header(data, path, IDX_LABELS_MAGIC, "label", ndim=1)
    _check_idx_size(data, path, 8, count, f"{count} labels")
    return np.frombuffer(data, dtype=np.uint8, count=count, offset=8).copy()


def _check_idx_size(data: bytes, path: Path, header_size: int, body_size: int, items: str) -> None:
    found = len(data) - header_size
    if found < body_size:
        raise DataError(
            f"IDX file {path} is truncated: its header declares {items} ({body_size} bytes "
            f"after the header) but it contains only {found} bytes. Download it again."
        )
    if found > body_size:
        raise DataError(
            f"IDX file {path} is damaged: its header declares {items} ({body_size} bytes "
            f"after the header) but it contains {found} bytes. Download it again."
        )


# PNG class folders


def _class_folders(folder: Path) -> list[Path]:
    """List the class subfolders sorted by name, skipping hidden ones such as .ipynb_checkpoints."""
    subfolders = [child for child in folder.iterdir() if child.is_dir() and not child.name.startswith(".")]
    return sorted(subfolders, key=lambda child: child.name)


def _load_png_folder(folder: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Load every non-hidden file of each class subfolder as an image, in name order."""
    class_folders = _class_folders(folder)
    images: list[np.ndarray] = []
    labels: list[int] = []
    for class_index, class_folder in enumerate(class_folders):
        files = [
            child for child in class_folder.iterdir() if child.is_file() and not child.name.startswith(".")
        ]
        if not files:
            raise DataError(
                f"Class folder {class_folder} contains no PNG images. Each subfolder of "
                f"{folder} is a class and needs at least one 28x28 image: add images or "
                "remove the subfolder."
            )
        for file in sorted(files, key=lambda child: child.name):
            images.append(_read_image(file))
            labels.append(class_index)

    class_names = tuple(class_folder.name for class_folder in class_folders)
    return np.stack(images), np.array(labels, dtype=np.int64), class_names


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
            width, height = image.size
            pixels = np.asarray(image.convert("L"), dtype=np.uint8)
    except OSError as err:  # PIL.UnidentifiedImageError is a subclass of OSError.
        raise DataError(
            f"File {path} is not an image that Pillow can read ({err}). Class folders may "
            "contain only 28x28 images: remove or replace this file."
        ) from err
    if (width, height) != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(
            f"Image {path} is {width}x{height} pixels, but 28x28 images are expected. "
            "Resize it to 28x28 pixels or remove it."
        )
    return pixels
