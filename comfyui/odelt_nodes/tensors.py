"""IMAGE and LATENT between ComfyUI and odelt.

ComfyUI passes IMAGE as a ``torch.Tensor [B, H, W, C]`` float in 0..1 and LATENT as ``{"samples": torch.Tensor
[B, C, H, W]}``; odelt's host takes and returns float32 numpy arrays of the same layouts. CPU float32 tensors convert
without a copy both ways (``Tensor.numpy()`` / ``torch.from_numpy``); the host copies once into and once out of the
plugin. Without torch (tests, scripts) the same functions pass numpy arrays through, so the node classes run with numpy
inputs and return numpy outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:  # ComfyUI always has torch; the tests and plain scripts need not.
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

HAVE_TORCH = torch is not None


def to_numpy(x: Any) -> np.ndarray:
    """A tensor or array as a C-contiguous float32 numpy array (no copy for a CPU float32 tensor)."""
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def from_numpy(a: np.ndarray) -> Any:
    """A numpy array as ComfyUI's tensor (shares the memory), or the array itself without torch."""
    if torch is not None:
        return torch.from_numpy(np.ascontiguousarray(a))
    return a


def latent_to_plugin(v: Any) -> np.ndarray:
    """ComfyUI's LATENT dict (or a bare tensor) as the plugin's [B, C, H, W] array."""
    if isinstance(v, dict):
        v = v["samples"]
    return to_numpy(v)


def latent_from_plugin(a: np.ndarray) -> dict:
    """The plugin's LATENT array as ComfyUI's ``{"samples": tensor}``."""
    return {"samples": from_numpy(a)}


def image_to_plugin(v: Any) -> np.ndarray:
    """ComfyUI's IMAGE [B, H, W, C] 0..1 as a float32 array."""
    return to_numpy(v)


def image_from_plugin(a: np.ndarray) -> Any:
    """The plugin's IMAGE array as ComfyUI's tensor."""
    return from_numpy(a)
