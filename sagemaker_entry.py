"""What SageMaker runs in the training container (under torchrun): `--name value` hyperparameters
become Hydra overrides of configs/train.yaml. See src/cloud/entry.py."""

from src.cloud.entry import main

if __name__ == "__main__":
    main()
