"""The inference core: weights + preprocessing -> counts, without Hydra or Lightning.

The model artifact (``artifact``), Lightning checkpoints read without Lightning (``checkpoint``),
the PyTorch and ONNX Runtime backends (``backends``) and the ``CountPredictor`` every serving path and
evaluation use (``predictor``, built by ``loading``). Imports only ``src.data`` and ``src.models``.
"""
