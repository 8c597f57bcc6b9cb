"""Inspect: the regulator lab. One image inside the regulator, attributions, and whole-split analyses.

The page's sections are plain functions in ``dashboard.inspect_sections``; this file only runs them.
"""
import warnings

from regnet.dashboard import inspect_sections

warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")

inspect_sections.render()
