"""Serve a model artifact: `python serve.py model_dir=<run>/model [backend=onnx|onnx-int8] [port=8080]`."""

import hydra
from omegaconf import DictConfig

import src  # noqa: F401  (sets PROJECT_ROOT for the configs)


@hydra.main(version_base="1.3", config_path="configs", config_name="serve")
def main(cfg: DictConfig) -> None:
    import torch

    from src.inference.predictor import CountPredictor
    from src.serving.app import create_app, run

    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)  # OnnxRunner follows torch's thread count
    predictor = CountPredictor.from_model_dir(cfg.model_dir, backend=cfg.backend)  # loaded once
    if cfg.micro_batching.enabled:
        from src.serving.batching import with_micro_batching

        predictor = with_micro_batching(predictor, cfg.micro_batching.max_batch, cfg.micro_batching.max_wait_ms)
    app = create_app(predictor, max_body_bytes=cfg.max_body_bytes, max_pixels=cfg.max_pixels)
    run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level)


if __name__ == "__main__":
    main()
