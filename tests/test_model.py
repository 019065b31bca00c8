"""Generator and discriminator shapes, and the DCGAN train_step under model.fit."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from gan.model import build_discriminator, build_gan, build_generator


def _gan(num_classes=None, seed=0):
    return build_gan(
        latent_dim=16,
        width=8,
        num_classes=num_classes,
        seed=seed,
        generator_lr=2e-4,
        discriminator_lr=2e-4,
        beta_1=0.5,
        beta_2=0.999,
    )


@pytest.fixture(scope="module")
def real_batch(mnist_path):
    with np.load(mnist_path, allow_pickle=False) as data:
        images = data["x_train"][:64].astype("float32") / 127.5 - 1.0
        labels = data["y_train"][:64].astype("int32")
    return images[..., None], labels


def test_generator_shapes_unconditional():
    generator = build_generator(latent_dim=32, width=8)
    images = generator(np.zeros((5, 32), "float32"), training=False)
    assert images.shape == (5, 28, 28, 1)
    assert float(tf.reduce_max(tf.abs(images))) <= 1.0
    assert generator.get_layer("project").output.shape == (None, 7 * 7 * 32)


def test_generator_shapes_conditional():
    generator = build_generator(latent_dim=32, width=8, num_classes=10)
    images = generator([np.zeros((3, 32), "float32"), np.array([0, 4, 9], "int32")], training=False)
    assert images.shape == (3, 28, 28, 1)
    assert [tuple(t.shape) for t in generator.inputs] == [(None, 32), (None,)]


def test_conditional_generator_depends_on_label():
    generator = build_generator(latent_dim=8, width=4, num_classes=10)
    noise = np.ones((2, 8), "float32")
    images = generator([noise, np.array([1, 7], "int32")], training=False).numpy()
    assert not np.array_equal(images[0], images[1])


def test_discriminator_shapes_both_variants():
    images = np.zeros((4, 28, 28, 1), "float32")
    assert build_discriminator(width=8)(images).shape == (4, 1)
    conditional = build_discriminator(width=8, num_classes=10)
    assert conditional([images, np.arange(4, dtype="int32")]).shape == (4, 1)


def test_width_scales_parameters():
    small = build_generator(latent_dim=16, width=8).count_params()
    large = build_generator(latent_dim=16, width=16).count_params()
    assert large > 2 * small


def test_train_step_reports_metrics(real_batch):
    gan = _gan()
    images, _ = real_batch
    logs = gan.train_step(tf.constant(images))
    assert set(logs) == {"d_loss", "g_loss", "d_real", "d_fake"}
    for name in ("d_real", "d_fake"):
        assert 0.0 <= float(logs[name]) <= 1.0
    for name in ("d_loss", "g_loss"):
        assert np.isfinite(float(logs[name]))
        assert float(logs[name]) > 0.0


def test_train_step_updates_both_networks_once(real_batch):
    gan = _gan()
    images, _ = real_batch
    generator_before = [w.numpy().copy() for w in gan.generator.trainable_weights]
    discriminator_before = [w.numpy().copy() for w in gan.discriminator.trainable_weights]
    gan.train_step(tf.constant(images))
    assert int(gan.d_optimizer.iterations.numpy()) == 1
    assert int(gan.g_optimizer.iterations.numpy()) == 1
    assert any(
        not np.array_equal(a, w.numpy())
        for a, w in zip(generator_before, gan.generator.trainable_weights, strict=True)
    )
    assert any(
        not np.array_equal(a, w.numpy())
        for a, w in zip(discriminator_before, gan.discriminator.trainable_weights, strict=False)
    )


def test_train_step_forward_passes(real_batch):
    """G runs once and D twice (real and fake batch) per step, and one noise batch is drawn."""
    gan = _gan()
    images, _ = real_batch
    calls = {"generator": 0, "discriminator": 0}
    for name in calls:
        network = getattr(gan, name)
        original = network.call

        def counting(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        network.call = counting
    state_before = gan.seed_generator.state.numpy().copy()
    gan.train_step(tf.constant(images))
    assert calls == {"generator": 1, "discriminator": 2}
    reference = _gan()
    reference.seed_generator.state.assign(state_before)
    reference._noise(4)
    assert np.array_equal(gan.seed_generator.state.numpy(), reference.seed_generator.state.numpy())


def test_generator_gradient_uses_discriminator_before_the_step(real_batch):
    """The generator's update is computed against D as it was before D's update of the same step."""
    images, _ = real_batch
    gan, twin = _gan(seed=5), _gan(seed=5)
    for source, target in ((gan.generator, twin.generator), (gan.discriminator, twin.discriminator)):
        target.set_weights(source.get_weights())
    gan.train_step(tf.constant(images))
    # The twin makes the same fakes from the same noise and takes G's gradient against the old D.
    noise = twin._noise(len(images))
    with tf.GradientTape() as tape:
        fakes = twin.generator(noise, training=True)
        loss = twin._mean_loss(tf.ones((len(images), 1)), twin.discriminator(fakes, training=True))
    gradients = tape.gradient(loss, twin.generator.trainable_variables)
    twin.g_optimizer.apply_gradients(zip(gradients, twin.generator.trainable_variables, strict=True))
    for ours, expected in zip(gan.generator.trainable_weights, twin.generator.trainable_weights, strict=True):
        np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_fit_averages_metrics_over_epoch(real_batch):
    images, labels = real_batch
    gan = _gan(num_classes=10)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    per_batch = []

    class Recorder(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            per_batch.append(float(logs["d_loss"]))

    history = gan.fit(dataset, epochs=2, verbose=0, shuffle=False, callbacks=[Recorder()])
    assert set(history.history) == {"d_loss", "g_loss", "d_real", "d_fake"}
    # Running means restart each epoch: the epoch value is the last running mean of that epoch.
    assert len(per_batch) == 8
    assert history.history["d_loss"][0] == pytest.approx(per_batch[3], rel=1e-6)
    assert history.history["d_loss"][1] == pytest.approx(per_batch[7], rel=1e-6)
    assert int(gan.g_optimizer.iterations.numpy()) == 8


def test_noise_comes_from_model_seed_generator():
    first, second = _gan(seed=3), _gan(seed=3)
    assert np.array_equal(first._noise(4).numpy(), second._noise(4).numpy())
    # Each draw advances the state, so the next draw differs.
    assert not np.array_equal(first._noise(4).numpy(), first._noise(4).numpy())
    # Copying the state reproduces the next draw: what a checkpoint restore relies on.
    second.seed_generator.state.assign(first.seed_generator.state.value)
    assert np.array_equal(first._noise(4).numpy(), second._noise(4).numpy())


def test_other_seed_draws_other_noise():
    assert not np.array_equal(_gan(seed=1)._noise(4).numpy(), _gan(seed=2)._noise(4).numpy())
