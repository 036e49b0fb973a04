"""Training: the Hydra-driven pipeline and the training-health callback."""
