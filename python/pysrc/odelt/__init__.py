"""odelt: ODE_t(ODE_l) nodes from Python.

A host built on odelt's Rust host SDK: it loads odelt node plugins through their stable ABI (the wheel carries the
project's plugin; ``ODELT_PLUGIN_PATH`` adds others), runs ComfyUI API-format workflows once or as a batch, and runs
single nodes with Python values. Nodes run with the GIL released; a ``CancelToken``, ``Host.interrupt()`` or
Ctrl-C stops a run within one evaluation of the running node.

    import odelt
    host = odelt.Host(models_dir="models", output_dir="output")
    result = host.run("examples/workflows/generate.json", set={"4.seed": 7})
    print(result.files)                # the PNGs SaveImage wrote
    images = result.images["5"]        # numpy float32 [B, H, W, 3] in 0..1
"""

from __future__ import annotations

import os as _os

from . import _odelt
from ._odelt import (  # noqa: F401
    CONTRACT_VERSION,
    BatchItem,
    CancelToken,
    Handle,
    Host,
    NodeOutput,
    RunResult,
    __version__,
)
from .errors import (  # noqa: F401
    Interrupted,
    NodeError,
    OdeltError,
    PluginLoadError,
    ValidationError,
    WorkflowError,
)

#: Where the wheel's own plugin library lies (searched by ``Host()`` when ``plugins`` is not given).
BUNDLED_PLUGIN_DIR = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "plugins")
_odelt._set_bundled_plugin_dir(BUNDLED_PLUGIN_DIR)

__all__ = [
    "Host",
    "RunResult",
    "BatchItem",
    "NodeOutput",
    "Handle",
    "CancelToken",
    "OdeltError",
    "WorkflowError",
    "ValidationError",
    "NodeError",
    "Interrupted",
    "PluginLoadError",
    "BUNDLED_PLUGIN_DIR",
    "CONTRACT_VERSION",
    "__version__",
]
