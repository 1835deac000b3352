"""VAAL's networks (Sinha et al., ICCV'19): a convolutional VAE whose latent mean feeds a
discriminator that tells labeled from unlabeled images. Encoder: four conv 4x4 stride 2 with
BatchNorm and ReLU (128-256-512-1024 channels), linear mu and log-variance; decoder: a linear
layer to 1024 maps at 1/8 of the input side, three transposed convs back to full size, and a 1x1
transposed conv to the input channels (``width`` scales every layer; 128 in the paper). Inputs must
have a side divisible by 16 (32 for CIFAR)."""

import torch
from torch import nn


class VAE(nn.Module):
    def __init__(self, in_channels=3, image_size=32, z_dim=32, width=128):
        super().__init__()
        channels = [in_channels, width, 2 * width, 4 * width, 8 * width]
        self.top = 8 * width
        layers = []
        for cin, cout in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        flat = self.top * (image_size // 16) ** 2
        self.fc_mu, self.fc_logvar = nn.Linear(flat, z_dim), nn.Linear(flat, z_dim)
        self.start = image_size // 8
        self.fc_decode = nn.Linear(z_dim, self.top * self.start ** 2)
        layers = []
        for cin, cout in zip(channels[:1:-1], channels[-2:0:-1]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        self.decoder = nn.Sequential(*layers, nn.ConvTranspose2d(width, in_channels, 1))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def encode(self, x):
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def forward(self, x):
        """(reconstruction, z, mu, logvar) with z = mu + sigma * eps (reparameterisation)."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = self.decoder(self.fc_decode(z).view(-1, self.top, self.start, self.start))
        return recon, z, mu, logvar


class LatentDiscriminator(nn.Module):
    """z -> 512 -> 512 -> 1, ReLU, sigmoid: the probability that an image is labeled."""

    def __init__(self, z_dim=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z_dim, 512), nn.ReLU(True), nn.Linear(512, 512), nn.ReLU(True),
                                 nn.Linear(512, 1), nn.Sigmoid())

    def forward(self, z):
        return self.net(z).squeeze(1)
