"""RegNet Lab: the self-regulated network (Xu et al. 2021, arXiv 2101.00590) and its ResNet baselines.

Not torchvision's RegNetX/Y ("Designing Network Design Spaces"): here a RegNet
is a ResNet whose blocks carry a convolutional RNN, the regulator.
"""
from .models import build_model, list_models, record

__all__ = ["build_model", "list_models", "record"]
__version__ = "0.1.0"
