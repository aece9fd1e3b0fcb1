"""ComfyUI's UI-format workflows (what the editor saves and loads by drag-and-drop) to the API format (what
``POST /prompt`` takes), from node descriptors in the ``/object_info`` shape: widget values are matched to the
widget inputs in declaration order (required, then optional), skipping the extra "control after generate" value that
follows a seed. Used by check_in_comfyui.py and the tests; plain Python, no ComfyUI needed."""

from __future__ import annotations

from typing import Any, Dict

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _is_widget(spec: list) -> bool:
    ty = spec[0]
    if isinstance(ty, list):
        return True
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return ty in WIDGET_TYPES and not opts.get("forceInput")


def ui_to_api(ui: dict, object_info: Dict[str, dict]) -> dict:
    links = {l[0]: l for l in ui.get("links", [])}
    prompt: Dict[str, Any] = {}
    for node in ui["nodes"]:
        if node.get("mode", 0) in (2, 4):  # muted / bypassed
            continue
        info = object_info[node["type"]]
        inputs: Dict[str, Any] = {}
        linked = {}
        for inp in node.get("inputs", []) or []:
            if inp.get("link") is not None:
                _, src, slot, _, _, _ = links[inp["link"]]
                linked[inp["name"]] = [str(src), slot]
        values = list(node.get("widgets_values", []) or [])
        pos = 0
        for part in ("required", "optional"):
            for name, spec in info["input"].get(part, {}).items():
                if name in linked:
                    inputs[name] = linked[name]
                    if _is_widget(spec) and pos < len(values):
                        pos += 1  # a widget converted to an input still keeps its value slot
                    continue
                if not _is_widget(spec):
                    continue
                if pos < len(values):
                    inputs[name] = values[pos]
                pos += 1
                opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if opts.get("control_after_generate") or (name in ("seed", "noise_seed") and spec[0] == "INT"):
                    pos += 1
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
