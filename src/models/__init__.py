"""Models: backbones, the counting network, losses, metrics and the LightningModule."""
