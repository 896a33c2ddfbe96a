"""The VAE's loss and training, on tiny hand-checkable cases and a few real steps."""

import math

import torch

from export.data import DataSplits, Digits, load_splits
from export.model import VAE, ModelSizes, neg_elbo, reparameterize
from export.train import TrainConfig, train


def test_default_sizes_are_the_seed_model():
    model = VAE()
    assert model.encoder.hidden.weight.shape == (256, 784)
    assert model.encoder.mean.weight.shape == (2, 256)
    assert model.encoder.log_variance.weight.shape == (2, 256)
    assert [type(layer).__name__ for layer in model.decoder.layers] == ["Linear", "ReLU", "Linear"]
    assert model.decoder.layers[0].weight.shape == (256, 2)
    assert model.decoder.layers[2].weight.shape == (784, 256)
    images = model.decoder(torch.randn(5, 2))
    assert images.shape == (5, 784) and images.min() >= 0 and images.max() <= 1


def test_reparameterize_is_mean_plus_std_times_noise():
    mean, log_variance = torch.tensor([1.0]), torch.tensor([math.log(4.0)])
    noise = torch.tensor([0.5])
    assert reparameterize(mean, log_variance, noise).item() == 1.0 + 2.0 * 0.5


def test_neg_elbo_matches_a_hand_computation():
    sizes = ModelSizes(image_pixels=2, hidden=1, latent_dim=1)
    model = VAE(sizes)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.encoder.hidden.weight.fill_(1.0)  # feature = relu(x1 + x2)
        model.encoder.mean.weight.fill_(0.5)  # mean = 0.5 * feature
        model.encoder.log_variance.bias.fill_(math.log(0.25))  # variance 0.25, std 0.5
        model.decoder.layers[0].weight.fill_(1.0)  # hidden = relu(z)
        model.decoder.layers[2].weight.copy_(torch.tensor([[2.0], [-1.0]]))  # logits
    images = torch.tensor([[1.0, 0.0]])
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn((1, 1), generator=torch.Generator().manual_seed(3)).item()

    mean, variance = 0.5, 0.25
    z = mean + 0.5 * noise
    hidden = max(z, 0.0)
    p1, p2 = 1 / (1 + math.exp(-2 * hidden)), 1 / (1 + math.exp(hidden))
    reconstruction = -(math.log(p1) + math.log(1 - p2))
    kl = 0.5 * (variance + mean**2 - 1 - math.log(variance))

    terms = neg_elbo(model, images, generator)
    assert math.isclose(terms.reconstruction.item(), reconstruction, rel_tol=1e-5)
    assert math.isclose(terms.kl.item(), kl, rel_tol=1e-5)
    assert math.isclose(terms.neg_elbo.item(), reconstruction + kl, rel_tol=1e-5)


def small_data() -> DataSplits:
    splits = load_splits()
    return DataSplits(
        train=Digits(splits.train.images[:512], splits.train.labels[:512]),
        held_out=Digits(splits.held_out.images[:256], splits.held_out.labels[:256]),
    )


def test_a_few_epochs_lower_train_and_held_out_loss():
    result = train(TrainConfig(epochs=3, batch_size=64), small_data(), progress=False)
    first, last = result.history[0], result.history[-1]
    assert last.train_neg_elbo < first.train_neg_elbo
    assert last.heldout_neg_elbo < first.heldout_neg_elbo
    assert math.isclose(last.heldout_neg_elbo, last.heldout_reconstruction + last.heldout_kl)


def test_training_is_repeatable_with_the_same_seed():
    data = small_data()
    runs = [train(TrainConfig(epochs=1, seed=5), data, progress=False) for _ in range(2)]
    assert runs[0].history == runs[1].history
    for a, b in zip(runs[0].model.parameters(), runs[1].model.parameters(), strict=True):
        assert torch.equal(a, b)
