"""A DCGAN (Radford et al., ICLR'16) for ASAL: generator z -> (side/8) maps of 4·width channels ->
three transposed convs (stride 2) -> tanh image; discriminator mirrors it with LeakyReLU(0.2) and
no BatchNorm (normalising separate real and fake batches hides a shift of their mean).
Images live in [-1, 1]; the side must be divisible by 8 (32 for CIFAR)."""

from torch import nn


class Generator(nn.Module):
    def __init__(self, out_channels=3, image_size=32, latent=100, width=64):
        super().__init__()
        self.start, self.width = image_size // 8, width
        units = 4 * width * self.start ** 2
        self.fc = nn.Sequential(nn.Linear(latent, units), nn.BatchNorm1d(units), nn.ReLU(True))
        self.net = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(True),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),
            nn.ConvTranspose2d(width, out_channels, 4, 2, 1), nn.Tanh())

    def forward(self, z):
        return self.net(self.fc(z).view(-1, 4 * self.width, self.start, self.start))


class Discriminator(nn.Module):
    def __init__(self, in_channels=3, image_size=32, width=64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Flatten(), nn.Linear(4 * width * (image_size // 8) ** 2, 1))

    def forward(self, x):
        """Logits of 'real'."""
        return self.net(x).squeeze(1)
