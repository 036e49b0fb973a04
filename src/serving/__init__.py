"""Serving: the model artifact, the inference handler, the HTTP app and ONNX export.

Nothing here needs Hydra or Lightning: an endpoint container stays light.
"""
