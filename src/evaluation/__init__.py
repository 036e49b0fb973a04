"""Evaluation: predict a labelled folder, compute metrics, compare with baselines, write a report."""
