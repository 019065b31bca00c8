"""The DCGAN: generator, discriminator and the keras.Model whose train_step trains both.

The architecture follows Radford et al., "Unsupervised Representation Learning
with Deep Convolutional Generative Adversarial Networks" (2015). The generator
projects the latent vector to a 7x7 feature map and upsamples it to a 28x28
tanh image with transposed convolutions, batch normalisation and ReLU. The
discriminator downsamples with strided convolutions and LeakyReLU(0.2).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

IMAGE_SHAPE = (28, 28, 1)
LABEL_EMBEDDING_DIM = 50


def build_generator(
    latent_dim: int,
    width: int = 64,
    num_classes: int | None = None,
    dtype_policy: str | None = None,
) -> keras.Model:
    """Build G: z (and a class label when ``num_classes`` is set) -> image in [-1, 1].

    ``width`` is the filter count of the last hidden layer; earlier layers
    have 2x and 4x as many. ``dtype_policy`` (such as ``"mixed_bfloat16"``)
    sets the Keras dtype policy of the hidden layers; None takes the global
    policy. The output layer computes in float32 under every policy.
    """
    policy = {} if dtype_policy is None else {"dtype": dtype_policy}
    latent = keras.Input(shape=(latent_dim,), name="latent")
    inputs = [latent]
    x = latent
    if num_classes is not None:
        label = keras.Input(shape=(), dtype="int32", name="label")
        inputs.append(label)
        embedded = layers.Embedding(num_classes, LABEL_EMBEDDING_DIM, name="label_embedding", **policy)(label)
        x = layers.Concatenate(name="latent_and_label", **policy)([latent, embedded])

    x = layers.Dense(7 * 7 * 4 * width, use_bias=False, name="project", **policy)(x)
    x = layers.BatchNormalization(name="project_bn", **policy)(x)
    x = layers.ReLU(**policy)(x)
    x = layers.Reshape((7, 7, 4 * width), **policy)(x)

    # 7x7 -> 7x7 -> 14x14 -> 28x28
    for index, (filters, strides) in enumerate([(2 * width, 1), (width, 2)]):
        x = layers.Conv2DTranspose(
            filters,
            5,
            strides=strides,
            padding="same",
            use_bias=False,
            name=f"deconv{index + 1}",
            **policy,
        )(x)
        x = layers.BatchNormalization(name=f"deconv{index + 1}_bn", **policy)(x)
        x = layers.ReLU(**policy)(x)
    # The output stays float32 under mixed precision so that images are exact in [-1, 1].
    images = layers.Conv2DTranspose(
        1,
        5,
        strides=2,
        padding="same",
        activation="tanh",
        dtype="float32",
        name="image",
    )(x)
    return keras.Model(inputs if len(inputs) > 1 else latent, images, name="generator")


def build_discriminator(width: int = 64, num_classes: int | None = None) -> keras.Model:
    """Build D: image (and a class label when ``num_classes`` is set) -> one real/fake logit."""
    image = keras.Input(shape=IMAGE_SHAPE, name="image")
    inputs = [image]
    x = image
    if num_classes is not None:
        # The label enters as a second image channel: its embedding projected to 28x28.
        label = keras.Input(shape=(), dtype="int32", name="label")
        inputs.append(label)
        embedded = layers.Embedding(num_classes, LABEL_EMBEDDING_DIM, name="label_embedding")(label)
        label_map = layers.Dense(28 * 28, name="label_map")(embedded)
        label_map = layers.Reshape(IMAGE_SHAPE)(label_map)
        x = layers.Concatenate(name="image_and_label")([image, label_map])

    # 28x28 -> 14x14 -> 7x7; no batch normalisation on the first layer, as in the paper.
    x = layers.Conv2D(width, 5, strides=2, padding="same", name="conv1")(x)
    x = layers.LeakyReLU(negative_slope=0.2)(x)
    x = layers.Conv2D(2 * width, 5, strides=2, padding="same", use_bias=False, name="conv2")(x)
    x = layers.BatchNormalization(name="conv2_bn")(x)
    x = layers.LeakyReLU(negative_slope=0.2)(x)
    x = layers.Flatten()(x)
    logit = layers.Dense(1, dtype="float32", name="logit")(x)
    return keras.Model(inputs if len(inputs) > 1 else image, logit, name="discriminator")


class DCGAN(keras.Model):
    """Generator and discriminator trained adversarially under ``model.fit``.

    Each ``train_step`` runs the generator once and the discriminator on the
    real and the generated batch, then updates both networks from that one
    forward pass, each with its own optimizer. The latent noise is drawn
    fresh for every step from ``self.seed_generator``. Its state is a
    variable saved in checkpoints, so a resumed run draws the same noise as
    an uninterrupted one.
    """

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        latent_dim: int,
        num_classes: int | None = None,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.seed_generator = keras.random.SeedGenerator(seed, name="noise_seed")
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.d_real_tracker = keras.metrics.Mean(name="d_real")
        self.d_fake_tracker = keras.metrics.Mean(name="d_fake")
        self.bce = keras.losses.BinaryCrossentropy(from_logits=True, reduction="none")
        # Both networks are functional models, built at construction. Marking
        # the wrapper built stops fit() under a tf.distribute strategy from
        # tracing call() on a data batch to build it.
        self.built = True

    @property
    def conditional(self) -> bool:
        return self.num_classes is not None

    @property
    def metrics(self):
        return [
            self.d_loss_tracker,
            self.g_loss_tracker,
            self.d_real_tracker,
            self.d_fake_tracker,
        ]

    def compile(
        self,
        d_optimizer: keras.optimizers.Optimizer,
        g_optimizer: keras.optimizers.Optimizer,
        jit_compile: bool = False,
    ):
        """Set both optimizers; ``jit_compile`` makes ``fit`` compile the train step with XLA."""
        super().compile(jit_compile=jit_compile)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer

    def build_optimizers(self) -> None:
        """Create the optimizer slots now, so a checkpoint can restore into them."""
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self.generator.trainable_variables)

    def call(self, inputs, training=False):
        return self.generator(inputs, training=training)

    def _inputs(self, tensor, labels):
        return [tensor, labels] if self.conditional else tensor

    def _mean_loss(self, labels, logits):
        # The per-replica mean divided by the replica count: gradients are
        # summed across replicas, so the sum is the mean over the global batch
        # when every replica has a batch of the same size. Under multi_worker
        # that always holds: the trainer drops each epoch's partial last batch
        # and requires a batch_size that splits evenly over the replicas.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return tf.reduce_mean(self.bce(labels, logits)) / replicas

    def _noise(self, batch_size):
        # Every replica advances the same seed state, so the replica id is
        # folded into the key to give each replica its own noise. The id is
        # global: under MultiWorkerMirroredStrategy it counts the replicas of
        # all workers, so no two workers draw the same noise.
        seed = self.seed_generator.next()
        replica = tf.distribute.get_replica_context()
        replica_id = 0 if replica is None else replica.replica_id_in_sync_group
        seed = seed + tf.cast(tf.stack([replica_id, 0]), seed.dtype)
        return tf.random.stateless_normal((batch_size, self.latent_dim), seed=seed)

    def train_step(self, data):
        if self.conditional:
            real_images, labels = data
        else:
            real_images, labels = data, None
        batch_size = tf.shape(real_images)[0]
        ones = tf.ones((batch_size, 1))
        zeros = tf.zeros((batch_size, 1))

        # One forward pass serves both updates: D learns to score real digits
        # as 1 and this batch of fakes as 0, while G learns to make D score the
        # same fakes as 1. Both gradients come from the networks as they were
        # before the step, as in the TensorFlow DCGAN tutorial.
        noise = self._noise(batch_size)
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake_images = self.generator(self._inputs(noise, labels), training=True)
            real_logits = self.discriminator(self._inputs(real_images, labels), training=True)
            fake_logits = self.discriminator(self._inputs(fake_images, labels), training=True)
            d_loss = self._mean_loss(ones, real_logits) + self._mean_loss(zeros, fake_logits)
            g_loss = self._mean_loss(ones, fake_logits)
            d_scaled = self.d_optimizer.scale_loss(d_loss)
            g_scaled = self.g_optimizer.scale_loss(g_loss)
        d_variables = self.discriminator.trainable_variables
        g_variables = self.generator.trainable_variables
        d_gradients = d_tape.gradient(d_scaled, d_variables)
        g_gradients = g_tape.gradient(g_scaled, g_variables)
        self.d_optimizer.apply_gradients(zip(d_gradients, d_variables, strict=True))
        self.g_optimizer.apply_gradients(zip(g_gradients, g_variables, strict=True))

        # Report per-example means; the trackers average them over the epoch.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        self.d_loss_tracker.update_state(d_loss * replicas)
        self.g_loss_tracker.update_state(g_loss * replicas)
        self.d_real_tracker.update_state(tf.reduce_mean(tf.sigmoid(real_logits)))
        self.d_fake_tracker.update_state(tf.reduce_mean(tf.sigmoid(fake_logits)))
        results = {metric.name: metric.result() for metric in self.metrics}
        if _spans_workers(tf.distribute.get_strategy()):
            # Keras 3.15 averages each output of a multi-worker step with
            # strategy.reduce(MEAN, axis=0), which rejects scalars. A shape (1,)
            # output reduces to the same scalar: the mean over all replicas.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results


def _spans_workers(strategy: tf.distribute.Strategy) -> bool:
    """Tell whether ``strategy`` is a MultiWorkerMirroredStrategy with replicas on more than one worker."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    return strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)


def build_gan(
    latent_dim: int,
    width: int,
    num_classes: int | None,
    seed: int,
    generator_lr: float,
    discriminator_lr: float,
    beta_1: float,
    beta_2: float,
    loss_scaling: bool = False,
    jit_compile: bool = False,
) -> DCGAN:
    """Build, compile and build the optimizers of a DCGAN; call inside a strategy scope."""
    generator = build_generator(latent_dim, width, num_classes)
    discriminator = build_discriminator(width, num_classes)
    gan = DCGAN(generator, discriminator, latent_dim, num_classes, seed=seed, name="dcgan")
    d_optimizer = keras.optimizers.Adam(discriminator_lr, beta_1=beta_1, beta_2=beta_2)
    g_optimizer = keras.optimizers.Adam(generator_lr, beta_1=beta_1, beta_2=beta_2)
    if loss_scaling:
        d_optimizer = keras.optimizers.LossScaleOptimizer(d_optimizer)
        g_optimizer = keras.optimizers.LossScaleOptimizer(g_optimizer)
    gan.compile(d_optimizer=d_optimizer, g_optimizer=g_optimizer, jit_compile=jit_compile)
    gan.build_optimizers()
    return gan
