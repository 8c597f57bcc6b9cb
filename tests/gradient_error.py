"""How far a network's gradients are from float64's, for the tests that compare the C++ kernels with the modules."""
from __future__ import annotations


def relative_error(grads, truth) -> float:
    """The worst over parameters of |g - g64| / |g64|, over whole tensors.

    Whole tensors, not elements: in a float32 network an element on a
    ReLU's edge lands on either side of it by rounding alone, and is then
    all error, whichever path computed it.
    """
    return max(((g.double() - t).norm() / (t.norm() + 1e-30)).item() for g, t in zip(grads, truth))
