"""Serving: request decoding and the SageMaker handler functions, the HTTP app, the predict CLI.

Builds on the inference core (``src.inference``); nothing here needs Hydra or Lightning, so an
endpoint container stays light.
"""
