"""Serve a model artifact: `python serve.py model_dir=<run>/model [backend=onnx|onnx-int8] [port=8080]`.

The artifact is validated at start-up (config, weights, one forward pass): a broken one exits with
status 1 and one line on stderr instead of serving errors. Limits and timeouts: configs/serve.yaml,
whose ``_target_`` (src.serving.server.serve) this calls.
"""

import hydra
from omegaconf import DictConfig

import src  # noqa: F401  (sets PROJECT_ROOT for the configs)
from src.utils.entry import task_wrapper


@hydra.main(version_base="1.3", config_path="configs", config_name="serve")
@task_wrapper("serve")
def main(cfg: DictConfig) -> None:
    from src.utils.config import call_target

    call_target(cfg)


if __name__ == "__main__":
    main()
