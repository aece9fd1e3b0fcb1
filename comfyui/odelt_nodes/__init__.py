"""odelt's nodes in ComfyUI.

Copy or link this folder into ComfyUI's ``custom_nodes/`` and ``pip install`` the odelt wheel into ComfyUI's Python
(see comfyui/README.md). The node classes are built from the plugin's own descriptors (bridge.py); models come from
ComfyUI's models folder (``checkpoints/``, ``vae/``), files go to ComfyUI's output folder, progress to its progress
bar, Cancel stops the sampler within one evaluation, and "free memory" frees the plugin's models.
"""

from __future__ import annotations

from . import env
from .bridge import HostHolder, build_node_classes

HOLDER = HostHolder()
NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = build_node_classes(HOLDER)
env.on_free_memory(HOLDER.free)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "HOLDER"]
