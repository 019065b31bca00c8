"""Seeds to digits: determinism, batch independence, grids, interpolation and files."""

import gc
import io
import weakref

import numpy as np
import pytest
from PIL import Image

from gan import generate
from gan.errors import InputError
from gan.generate import (
    GENERATION_BATCH,
    GridRequest,
    generate_images,
    gif_bytes,
    grid_image,
    latent_vectors,
    load_generator_file,
    make_grid,
    make_interpolation,
    npz_bytes,
    png_bytes,
    sample_seeds,
    save_png,
    slerp,
)
from gan.model import build_generator


@pytest.fixture(scope="module")
def generator():
    import keras

    keras.utils.set_random_seed(7)
    return build_generator(latent_dim=16, width=8)


@pytest.fixture(scope="module")
def conditional_generator():
    import keras

    keras.utils.set_random_seed(8)
    return build_generator(latent_dim=16, width=8, num_classes=10)


def _tiles(grid, count, columns, size=28, padding=2):
    tiles = []
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = padding + row * (size + padding), padding + column * (size + padding)
        tiles.append(grid[top : top + size, left : left + size])
    return np.stack(tiles)


def test_latent_vector_depends_only_on_its_seed():
    alone = latent_vectors([12], 16)
    among_others = latent_vectors([3, 12, 99], 16)
    assert alone.dtype == np.float32
    assert np.array_equal(alone[0], among_others[1])
    assert not np.array_equal(among_others[0], among_others[1])
    assert np.array_equal(latent_vectors([12], 16, scale=0.5)[0], alone[0] * np.float32(0.5))


def test_digit_independent_of_batch(generator):
    count = GENERATION_BATCH + 5  # spans two generator batches
    batch = generate_images(generator, sample_seeds(100, count))
    for index in (0, 7, count - 1):
        alone = generate_images(generator, [100 + index])
        assert np.array_equal(batch[index], alone[0]), index


def test_repeated_calls_give_same_pixels(generator):
    first = generate_images(generator, [1, 2, 3])
    generate_images(generator, list(range(50)))  # an unrelated request in between
    assert np.array_equal(first, generate_images(generator, [1, 2, 3]))
    assert first.dtype == np.uint8
    assert first.shape == (3, 28, 28)


def test_grid_tiles_are_seed_images(generator):
    result = make_grid(generator, GridRequest(seed=40, count=10, columns=4))
    assert result.seeds == list(range(40, 50))
    assert result.grid.shape == (3 * 30 + 2, 4 * 30 + 2)
    tiles = _tiles(result.grid, 10, 4)
    for index, tile in enumerate(tiles):
        assert np.array_equal(tile, generate_images(generator, [40 + index])[0]), index


def test_other_seed_other_pixels(generator):
    first = make_grid(generator, GridRequest(seed=0, count=4, columns=2))
    second = make_grid(generator, GridRequest(seed=1, count=4, columns=2))
    assert not np.array_equal(first.grid, second.grid)
    # The grid from seed 1 starts with the second digit of the grid from seed 0.
    assert np.array_equal(first.images[1:], second.images[:3])


def test_compiled_call_matches_eager_pixels(generator):
    latents = latent_vectors(range(GENERATION_BATCH), 16)
    eager = np.asarray(generator(latents, training=False))[..., 0]
    compiled = generate.images_from_latents(generator, latents)
    assert np.array_equal(compiled, generate.to_uint8(eager))


def eager_chunks(generator, latents, labels=None):
    """The pixels of one eager call per chunk of GENERATION_BATCH vectors, zero-padded as generation pads."""
    images = []
    for start in range(0, len(latents), GENERATION_BATCH):
        chunk = latents[start : start + GENERATION_BATCH]
        padded = np.zeros((GENERATION_BATCH, latents.shape[1]), np.float32)
        padded[: len(chunk)] = chunk
        inputs = padded
        if labels is not None:
            padded_labels = np.zeros(GENERATION_BATCH, np.int32)
            padded_labels[: len(chunk)] = labels[start : start + GENERATION_BATCH]
            inputs = [padded, padded_labels]
        images.append(np.asarray(generator(inputs, training=False))[: len(chunk), ..., 0])
    return generate.to_uint8(np.concatenate(images))


def test_one_compiled_call_runs_every_chunk(generator):
    """Several chunks in one graph call give the pixels of one eager call per chunk, from one trace."""
    latents = latent_vectors(range(2 * GENERATION_BATCH + 5), 16)
    images = generate.images_from_latents(generator, latents)
    assert images.shape == (len(latents), 28, 28)
    assert np.array_equal(images, eager_chunks(generator, latents))
    generate.images_from_latents(generator, latents[:3])
    assert generate._compiled_call(generator).experimental_get_tracing_count() == 1


def test_one_compiled_call_runs_every_conditional_chunk(conditional_generator):
    latents = latent_vectors(range(GENERATION_BATCH + 9), 16)
    labels = np.arange(len(latents)) % 10
    images = generate.images_from_latents(conditional_generator, latents, labels)
    assert np.array_equal(images, eager_chunks(conditional_generator, latents, labels))
    # The labels reach the generator: other labels give other digits.
    assert not np.array_equal(
        images, generate.images_from_latents(conditional_generator, latents, (labels + 1) % 10)
    )


def test_compiled_call_cached_per_generator(generator):
    first = generate._compiled_call(generator)
    assert generate._compiled_call(generator) is first
    other = build_generator(latent_dim=16, width=8)
    assert generate._compiled_call(other) is not first


def test_compiled_call_frees_its_generator():
    generator = build_generator(latent_dim=16, width=8)
    generate.images_from_latents(generator, latent_vectors([1], 16))
    alive = weakref.ref(generator)
    del generator
    gc.collect()
    assert alive() is None


def test_latent_scale_changes_pixels(generator):
    plain = make_grid(generator, GridRequest(seed=5, count=2, columns=2))
    truncated = make_grid(generator, GridRequest(seed=5, count=2, columns=2, latent_scale=0.3))
    assert not np.array_equal(plain.images, truncated.images)


def test_conditional_rows_give_one_class_per_row(conditional_generator):
    result = make_grid(conditional_generator, GridRequest(seed=0, columns=3, digit="rows"))
    assert len(result.images) == 30
    assert list(result.labels[:6]) == [0, 0, 0, 1, 1, 1]
    assert result.grid.shape == (10 * 30 + 2, 3 * 30 + 2)


def test_conditional_single_class(conditional_generator):
    sevens = make_grid(conditional_generator, GridRequest(seed=0, count=4, columns=4, digit=7))
    threes = make_grid(conditional_generator, GridRequest(seed=0, count=4, columns=4, digit=3))
    assert set(sevens.labels) == {7}
    assert not np.array_equal(sevens.images, threes.images)


def test_digit_rejected_for_unconditional(generator):
    with pytest.raises(InputError, match=r"not conditional"):
        make_grid(generator, GridRequest(digit=3))


def test_bad_conditional_class_rejected(conditional_generator):
    with pytest.raises(InputError, match=r"digit class must be 'rows' or a number in \[0, 9\], got 10"):
        make_grid(conditional_generator, GridRequest(count=2, digit=10))


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (GridRequest(seed=-1), r"seeds must lie in \[0, 4294967295\]"),
        (GridRequest(count=0), r"number of digits must be positive, got 0"),
        (GridRequest(columns=0), r"columns must be a positive integer, got 0"),
        (GridRequest(latent_scale=0.0), r"latent scale must be a finite number greater than 0"),
        (GridRequest(latent_scale=float("nan")), r"latent scale must be a finite number"),
    ],
)
def test_bad_request_rejected(generator, request_, message):
    with pytest.raises(InputError, match=message):
        make_grid(generator, request_)


def test_slerp_ends_and_norm():
    start, end = latent_vectors([1, 2], 64)
    path = slerp(start, end, 7)
    assert path.shape == (7, 64)
    np.testing.assert_allclose(path[0], start, rtol=1e-6)
    np.testing.assert_allclose(path[-1], end, rtol=1e-6)
    # The midpoint keeps a norm near the ends', where a straight line would shrink it.
    middle_norm = np.linalg.norm(path[3])
    straight_norm = np.linalg.norm((start + end) / 2)
    assert middle_norm > straight_norm
    assert middle_norm == pytest.approx((np.linalg.norm(start) + np.linalg.norm(end)) / 2, rel=0.1)


def test_interpolation_ends_are_seed_digits(generator):
    result = make_interpolation(generator, GridRequest(seed=3), end_seed=9, steps=5)
    assert result.images.shape == (5, 28, 28)
    ends = generate_images(generator, [3, 9])
    assert np.abs(result.images[0].astype(int) - ends[0]).max() <= 1
    assert np.abs(result.images[-1].astype(int) - ends[1]).max() <= 1
    assert result.grid.shape == (32, 5 * 30 + 2)
    with pytest.raises(InputError, match=r"at least 2 steps"):
        make_interpolation(generator, GridRequest(seed=3), end_seed=9, steps=1)


def test_conditional_interpolation_needs_one_class(conditional_generator):
    with pytest.raises(InputError, match=r"needs one digit class"):
        make_interpolation(conditional_generator, GridRequest(seed=0, digit="rows"), 5, 4)
    result = make_interpolation(conditional_generator, GridRequest(seed=0, digit=2), 5, 4)
    assert list(result.labels) == [2, 2, 2, 2]


def test_grid_image_layout():
    images = np.stack([np.full((28, 28), value, np.uint8) for value in (10, 20, 30)])
    grid = grid_image(images, columns=2)
    assert grid.shape == (2 * 30 + 2, 2 * 30 + 2)
    assert grid[2, 2] == 10
    assert grid[2, 32] == 20
    assert grid[32, 2] == 30
    assert grid[32, 32] == 0  # the empty fourth cell
    assert grid[0, 0] == 0  # padding


def test_png_round_trip(tmp_path):
    image = np.arange(28 * 28, dtype=np.uint32).reshape(28, 28).astype(np.uint8)
    path = save_png(image, tmp_path / "nested" / "grid.png")
    assert np.array_equal(np.asarray(Image.open(path)), image)
    enlarged = np.asarray(Image.open(io.BytesIO(png_bytes(image, scale=3))))
    assert enlarged.shape == (84, 84)
    assert np.array_equal(enlarged[::3, ::3], image)


def test_gif_has_every_frame():
    frames = [np.full((10, 10), value, np.uint8) for value in (0, 128, 255)]
    gif = Image.open(io.BytesIO(gif_bytes(frames, seconds_per_frame=0.2, scale=1)))
    assert gif.n_frames == 3
    assert gif.info["duration"] == 200
    with pytest.raises(InputError, match=r"at least one frame"):
        gif_bytes([])


def test_npz_holds_images_seeds_labels():
    images = np.zeros((2, 28, 28), np.uint8)
    with np.load(io.BytesIO(npz_bytes(images, [4, 5], [1, 2])), allow_pickle=False) as data:
        assert data["images"].shape == (2, 28, 28)
        assert list(data["seeds"]) == [4, 5]
        assert list(data["labels"]) == [1, 2]


def test_generator_file_round_trip(generator, tmp_path):
    path = tmp_path / "generator.keras"
    generator.save(path)
    loaded = load_generator_file(path)
    seeds = [0, 1, 2]
    assert np.array_equal(generate_images(loaded, seeds), generate_images(generator, seeds))


def test_generator_file_errors(tmp_path):
    with pytest.raises(InputError, match=r"not found"):
        load_generator_file(tmp_path / "missing.keras")
    other = tmp_path / "weights.h5"
    other.write_bytes(b"")
    with pytest.raises(InputError, match=r"must end in .keras"):
        load_generator_file(other)


@pytest.mark.parametrize(("count", "noun"), [(1, "digit"), (2, "digits")])
def test_cli_generate_reports_count(generator, tmp_path, capsys, count, noun):
    from gan import cli

    path = tmp_path / "generator.keras"
    generator.save(path)
    output = tmp_path / "grid.png"
    assert (
        cli.main(["generate", "--generator", str(path), "--count", str(count), "--output", str(output)]) == 0
    )
    assert f"wrote {count} {noun} to {output}" in capsys.readouterr().out
    assert output.stat().st_size > 0
