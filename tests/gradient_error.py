"""How far a network's float32 gradients are from float64's."""
from __future__ import annotations

import torch


def relative_error(grads, truth) -> float:
    """``|g - g64| / |g64|`` over all parameters at once (every gradient flattened into one vector).

    Over all parameters, not element by element: in a float32 network an
    element on a ReLU's edge lands on either side of it by rounding alone,
    and is then all error, whichever implementation computed it.
    """
    got = torch.cat([g.double().flatten() for g in grads])
    want = torch.cat([t.double().flatten() for t in truth])
    return ((got - want).norm() / want.norm()).item()
