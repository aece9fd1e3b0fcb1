"""ComfyUI node classes built from an odelt plugin's node descriptors (its ``/object_info``).

For each plugin node the bridge makes a class with ComfyUI's attributes: ``INPUT_TYPES`` (the plugin's inputs,
defaults, ranges, combos and tooltips, plus the hidden ``UNIQUE_ID``/``PROMPT``/``EXTRA_PNGINFO``),
``RETURN_TYPES``, ``RETURN_NAMES``, ``OUTPUT_TOOLTIPS``, ``FUNCTION``, ``CATEGORY``, ``OUTPUT_NODE``,
``DESCRIPTION``. Running one calls ``odelt.Host.call`` with the GIL released.

Types:
- IMAGE, LATENT, MASK and the widget types keep their names: the plugin's IMAGE and LATENT are ComfyUI's, so its
  sampler's LATENT goes into ComfyUI's VAEDecode or SaveLatent and its decoder's IMAGE into SaveImage/PreviewImage.
- Every other type (the plugin's MODEL and VAE handles, which are not ComfyUI's ModelPatcher or VAE) is namespaced
  as ``ODELT_<TYPE>``, so it cannot be wired into ComfyUI's KSampler or VAEDecode.

Names: a plugin node whose class name ComfyUI already has is left to ComfyUI when it only uses ComfyUI's own types
(SaveImage, PreviewImage, LoadLatent, SaveLatent, LoadImage ...: ComfyUI's versions do the same with the same
values), and registered as ``odelt_<Name>`` otherwise (the plugin's VAELoader returns an ODELT_VAE).
"""

from __future__ import annotations

import io
import threading
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

from . import env, tensors

#: Types ComfyUI and the plugin share by value.
SHARED_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "IMAGE", "LATENT", "MASK", "*"}
#: Prefix of the plugin's own types in ComfyUI.
TYPE_PREFIX = "ODELT_"
#: Prefix of plugin nodes whose names ComfyUI already uses.
NAME_PREFIX = "odelt_"
#: ComfyUI core node names the bridge assumes when ComfyUI's `nodes` module is not importable (tests, scripts).
COMFY_CORE_NODES = frozenset(
    {
        "CheckpointLoaderSimple", "VAELoader", "VAEDecode", "VAEEncode", "KSampler", "KSamplerAdvanced",
        "EmptyLatentImage", "SaveImage", "PreviewImage", "LoadImage", "LoadImageMask", "ImageScale",
        "ImageScaleBy", "ImageInvert", "LoadLatent", "SaveLatent", "LatentUpscale", "SetLatentNoiseMask",
        "CLIPTextEncode", "ConditioningCombine", "ImageBatch", "ImagePadForOutpaint", "VAEDecodeTiled",
    }
)
#: Combo inputs that list files of a ComfyUI model folder.
MODEL_FOLDER_INPUTS = {"ckpt_name": "checkpoints", "vae_name": "vae"}


def comfy_type(t: str) -> str:
    """The ComfyUI name of a plugin type (unions like ``"INT,FLOAT"`` map each member)."""
    parts = [p.strip() for p in t.split(",")]
    return ",".join(p if p in SHARED_TYPES else TYPE_PREFIX + p for p in parts)


def plugin_type(t: str) -> str:
    parts = [p.strip() for p in t.split(",")]
    return ",".join(p[len(TYPE_PREFIX):] if p.startswith(TYPE_PREFIX) else p for p in parts)


def _spec_types(spec: list) -> Optional[str]:
    return spec[0] if isinstance(spec[0], str) else None


def uses_only_shared_types(info: dict) -> bool:
    specs = list(info["input"].get("required", {}).values()) + list(info["input"].get("optional", {}).values())
    ins = [_spec_types(s) for s in specs]
    types = [t for t in ins if t is not None] + list(info.get("output", []))
    return all(p.strip() in SHARED_TYPES for t in types for p in t.split(","))


def comfy_node_names() -> frozenset:
    try:
        import nodes  # ComfyUI's own module

        return frozenset(getattr(nodes, "NODE_CLASS_MAPPINGS", {}).keys()) | COMFY_CORE_NODES
    except ImportError:
        return COMFY_CORE_NODES


def comfy_model_choices(choices: list, kind: str) -> list:
    """A model-folder combo as ComfyUI lists it: the plugin names files under its models directory
    (``checkpoints/x.safetensors`` when ComfyUI's models folder is the plugin's), ComfyUI names them relative to
    the folder kind (``x.safetensors``), which is what ComfyUI's own loaders and saved workflows use."""
    prefix = kind + "/"
    out: list = []
    for c in choices:
        name = c[len(prefix):] if isinstance(c, str) and c.startswith(prefix) else c
        if name not in out:
            out.append(name)
    return out


def plugin_model_value(value: Any, choices: list, kind: str) -> Any:
    """The plugin's name of a model-folder combo value ComfyUI sends (the inverse of comfy_model_choices)."""
    if isinstance(value, str) and value not in choices and f"{kind}/{value}" in choices:
        return f"{kind}/{value}"
    return value


def convert_spec(spec: list) -> list:
    """One input spec ``[TYPE or choices, options]`` for ComfyUI (types namespaced, options as described)."""
    ty = spec[0]
    options = dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(ty, str):
        ty = comfy_type(ty)
    return [ty, options] if options else [ty]


class HostHolder:
    """The one odelt.Host the node classes share, created on first use for ComfyUI's folders and device, and
    recreated when a model folder's file list changes (so new checkpoints appear after ComfyUI's refresh)."""

    def __init__(self, factory: Optional[Callable[[], Any]] = None) -> None:
        self._factory = factory or self._default_factory
        self._host: Any = None
        self._listing: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def _default_factory() -> Any:
        import odelt

        return odelt.Host(device=env.device(), **env.dirs())

    def _current_listing(self) -> Any:
        return tuple((k, tuple(env.filename_list(k) or ())) for k in sorted(set(MODEL_FOLDER_INPUTS.values())))

    def get(self, refresh: bool = False) -> Any:
        with self._lock:
            listing = self._current_listing() if refresh or self._host is None else self._listing
            if self._host is None or listing != self._listing:
                self._host = self._factory()
                self._listing = listing
            return self._host

    def free(self) -> None:
        with self._lock:
            if self._host is not None:
                self._host.free(True, True)


def _pil_preview(preview: Any) -> Any:
    """A plugin preview ``(format, w, h, bytes)`` as ComfyUI's ``("JPEG", PIL.Image, max_size)``."""
    if preview is None:
        return None
    try:
        from PIL import Image
    except ImportError:
        return None
    fmt, w, h, data = preview
    img = Image.frombytes("RGB", (w, h), data) if fmt == "rgb8" else Image.open(io.BytesIO(data))
    return ("JPEG", img, 512)


def to_plugin_value(value: Any, ty: Optional[str]) -> Any:
    """A ComfyUI input value as odelt.Host.call takes it."""
    if ty is None:
        return value
    base = plugin_type(ty)
    if base == "LATENT":
        return tensors.latent_to_plugin(value)
    if base in ("IMAGE", "MASK"):
        return tensors.image_to_plugin(value)
    return value


def from_plugin_value(value: Any, ty: str) -> Any:
    """A plugin output as ComfyUI passes it on."""
    if ty == "LATENT":
        return tensors.latent_from_plugin(value)
    if ty in ("IMAGE", "MASK"):
        return tensors.image_from_plugin(value)
    return value


def make_node_class(holder: HostHolder, info: dict, class_name: str) -> type:
    """The ComfyUI class of one plugin node."""
    plugin_name = info["name"]
    inputs = info["input"]
    in_types: Dict[str, Optional[str]] = {
        n: _spec_types(s) for part in ("required", "optional") for n, s in inputs.get(part, {}).items()
    }
    out_types = list(info.get("output", []))

    def input_types(cls: type) -> dict:
        # ComfyUI calls this for every /object_info: model-folder combos follow ComfyUI's folder listing.
        host = holder.get(refresh=True)
        current = host.nodes().get(plugin_name, info)["input"]
        d: Dict[str, Any] = {}
        for part in ("required", "optional"):
            specs = current.get(part, {})
            if specs:
                d[part] = {n: convert_spec(s) for n, s in specs.items()}
                for n, kind in MODEL_FOLDER_INPUTS.items():
                    if n in d[part] and isinstance(d[part][n][0], list):
                        d[part][n][0] = comfy_model_choices(d[part][n][0], kind)
        d.setdefault("required", {})
        d["hidden"] = {"unique_id": "UNIQUE_ID", "prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
        return d

    def run(self: Any, unique_id: Any = None, prompt: Any = None, extra_pnginfo: Any = None, **kwargs: Any) -> Any:
        host = holder.get()
        node_id = str(unique_id) if unique_id is not None else "0"
        values = {k: to_plugin_value(v, in_types.get(k)) for k, v in kwargs.items()}
        current = None
        for n, kind in MODEL_FOLDER_INPUTS.items():
            if n in values:
                current = current or host.nodes().get(plugin_name, info)["input"]
                spec = current.get("required", {}).get(n) or current.get("optional", {}).get(n) or [[]]
                if isinstance(spec[0], list):
                    values[n] = plugin_model_value(values[n], spec[0], kind)
        bar: Dict[str, Any] = {}

        def on_progress(ev: dict) -> None:
            env.throw_if_interrupted()  # ComfyUI's Cancel: stops the node within one evaluation
            if ev.get("type") != "progress":
                return
            if "bar" not in bar:
                bar["bar"] = env.progress_bar(int(ev["max"]), node_id)
            if bar["bar"] is not None:
                bar["bar"].update_absolute(int(ev["value"]), int(ev["max"]), _pil_preview(ev.get("preview")))

        env.throw_if_interrupted()
        out = host.call(
            plugin_name,
            values,
            node_id=node_id,
            on_progress=on_progress,
            prompt=prompt if isinstance(prompt, dict) else None,
            extra_pnginfo=extra_pnginfo if isinstance(extra_pnginfo, dict) else None,
        )
        result = tuple(from_plugin_value(v, t) for v, t in zip(out.values, out_types))
        if info.get("output_node"):
            return {"ui": out.ui or {}, "result": result}
        return result

    attrs = {
        "INPUT_TYPES": classmethod(input_types),
        "RETURN_TYPES": tuple(comfy_type(t) for t in out_types),
        "RETURN_NAMES": tuple(info.get("output_name", out_types)),
        "OUTPUT_TOOLTIPS": tuple(info.get("output_tooltips", ())),
        "OUTPUT_IS_LIST": tuple(info.get("output_is_list", [False] * len(out_types))),
        "FUNCTION": "run",
        "CATEGORY": info.get("category") or "odelt",
        "OUTPUT_NODE": bool(info.get("output_node", False)),
        "DESCRIPTION": info.get("description", ""),
        "DEPRECATED": bool(info.get("deprecated", False)),
        "EXPERIMENTAL": bool(info.get("experimental", False)),
        "ODELT_CLASS_TYPE": plugin_name,
        "run": run,
        "__doc__": info.get("description", ""),
    }
    return type(class_name, (), attrs)


def build_node_classes(
    holder: HostHolder, descriptors: Optional[dict] = None, taken: Optional[Iterable[str]] = None
) -> Tuple[dict, dict]:
    """``(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS)`` for every plugin node (see the module docs for the
    names that are left to ComfyUI or prefixed)."""
    descriptors = descriptors if descriptors is not None else holder.get().nodes()
    taken = frozenset(taken) if taken is not None else comfy_node_names()
    classes: Dict[str, type] = {}
    names: Dict[str, str] = {}
    for plugin_name, info in descriptors.items():
        key, display = plugin_name, info.get("display_name") or plugin_name
        if plugin_name in taken:
            if uses_only_shared_types(info):
                continue  # ComfyUI's own node does the same with the same values
            key, display = NAME_PREFIX + plugin_name, f"{display} (odelt)"
        classes[key] = make_node_class(holder, info, key)
        names[key] = display
    return classes, names
