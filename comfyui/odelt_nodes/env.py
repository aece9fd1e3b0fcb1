"""What the bridge takes from ComfyUI: folders (folder_paths), device, interrupt, progress bar and "free memory"
(comfy.model_management, comfy.utils). Every lookup falls back to a plain default outside ComfyUI, so the package can
be imported by a script or a test (which installs stand-in modules under these names)."""

from __future__ import annotations

import os
from typing import Any, Callable, Optional


def _import(name: str) -> Any:
    try:
        return __import__(name, fromlist=["_"])
    except ImportError:
        return None


def folder_paths() -> Any:
    return _import("folder_paths")


def model_management() -> Any:
    return _import("comfy.model_management")


def comfy_utils() -> Any:
    return _import("comfy.utils")


def dirs() -> dict:
    """models, output, temp and input directories: ComfyUI's, else ODELT_* variables, else ./models etc."""
    fp = folder_paths()
    if fp is not None:
        return {
            "models_dir": fp.models_dir,
            "output_dir": fp.get_output_directory(),
            "temp_dir": fp.get_temp_directory(),
            "input_dir": fp.get_input_directory(),
        }
    return {
        "models_dir": os.environ.get("ODELT_MODELS_DIR", "models"),
        "output_dir": os.environ.get("ODELT_OUTPUT_DIR", "output"),
        "temp_dir": os.environ.get("ODELT_TEMP_DIR", "temp"),
        "input_dir": os.environ.get("ODELT_INPUT_DIR", "input"),
    }


def device() -> str:
    """ODELT_DEVICE if set, else ComfyUI's device (``cpu`` with ``--cpu``, ``cuda:N`` otherwise; the plugin must then
    be built with its ``cuda`` feature, or set ODELT_DEVICE=cpu)."""
    forced = os.environ.get("ODELT_DEVICE")
    if forced:
        return forced
    mm = model_management()
    if mm is None:
        return "cpu"
    try:
        d = mm.get_torch_device()
    except Exception:  # noqa: BLE001 - no device is a CPU run
        return "cpu"
    kind = getattr(d, "type", str(d))
    if kind == "cuda":
        index = getattr(d, "index", None)
        return f"cuda:{index or 0}"
    return "cpu"


def filename_list(kind: str) -> Optional[list]:
    """ComfyUI's list of files of one model folder (``checkpoints``, ``vae``), or None outside ComfyUI."""
    fp = folder_paths()
    if fp is None:
        return None
    try:
        return list(fp.get_filename_list(kind))
    except Exception:  # noqa: BLE001 - unknown folder name
        return None


def throw_if_interrupted() -> None:
    """Raises ComfyUI's InterruptProcessingException when the user pressed Cancel."""
    mm = model_management()
    if mm is not None and hasattr(mm, "throw_exception_if_processing_interrupted"):
        mm.throw_exception_if_processing_interrupted()


def progress_bar(total: int, node_id: Optional[str]) -> Any:
    cu = comfy_utils()
    if cu is None or not hasattr(cu, "ProgressBar"):
        return None
    try:
        return cu.ProgressBar(total, node_id=node_id)
    except TypeError:  # older ComfyUI: no node_id
        return cu.ProgressBar(total)


def on_free_memory(callback: Callable[[], Any]) -> bool:
    """Makes ComfyUI's "free memory" / "unload models" (comfy.model_management.unload_all_models) also call
    `callback`. Returns whether it could."""
    mm = model_management()
    if mm is None or not hasattr(mm, "unload_all_models"):
        return False
    original = mm.unload_all_models
    if getattr(original, "_odelt_wrapped", False):
        return True

    def unload_all_models(*args: Any, **kwargs: Any) -> Any:
        try:
            callback()
        finally:
            return original(*args, **kwargs)  # noqa: B012 - ComfyUI's own unload always runs

    unload_all_models._odelt_wrapped = True  # type: ignore[attr-defined]
    mm.unload_all_models = unload_all_models
    return True
