"""RegNet Lab: the self-regulated network (Xu et al. 2021, arXiv 2101.00590) and its ResNet baselines.

Not torchvision's RegNetX/Y ("Designing Network Design Spaces"): here a RegNet
is a ResNet whose blocks carry a convolutional RNN, the regulator.

The dashboard is the sub-package ``regnet.dashboard``. Installed, it lies inside this folder (pyproject.toml
maps the repository's top-level ``dashboard/`` there); in a checkout it lies beside it, and the folder above
is searched too so that the one name finds it. Importing ``regnet`` never imports the dashboard.
"""
import os as _os

from .models import build_model, list_models, record

_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(__path__[0], "dashboard")) and _os.path.isfile(
        _os.path.join(_checkout, "dashboard", "app.py")):
    __path__.append(_checkout)

__all__ = ["build_model", "list_models", "record"]
__version__ = "0.1.0"
