"""The ComfyUI custom-node package (comfyui/odelt_nodes), loaded as ComfyUI would load it but with stand-ins for
ComfyUI's own modules (folder_paths, comfy.model_management, comfy.utils): ComfyUI and torch cannot be installed in
CI, and without torch the package passes numpy arrays where ComfyUI has torch tensors (odelt_nodes/tensors.py)."""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import odelt
from conftest import GENERATE, MODELS, REPO, read_png

COMFY = REPO / "comfyui"


class InterruptProcessingException(Exception):
    pass


class ProgressBar:
    instances: list = []

    def __init__(self, total, node_id=None):
        self.total, self.node_id, self.updates = total, node_id, []
        ProgressBar.instances.append(self)

    def update_absolute(self, value, total=None, preview=None):
        self.updates.append((value, total, preview))


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    """Stand-in ComfyUI modules, then the package imported from comfyui/ as ComfyUI's loader does."""
    root = tmp_path_factory.mktemp("comfy")
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(MODELS)
    fp.get_output_directory = lambda: str(root / "output")
    fp.get_temp_directory = lambda: str(root / "temp")
    fp.get_input_directory = lambda: str(root / "input")
    fp.listing = {"checkpoints": ["fashion-dit.safetensors"], "vae": []}
    fp.get_filename_list = lambda kind: fp.listing[kind]
    mm = types.ModuleType("comfy.model_management")
    mm.interrupted = False
    mm.unloaded = 0

    def throw():
        if mm.interrupted:
            mm.interrupted = False
            raise InterruptProcessingException()

    def unload_all_models():
        mm.unloaded += 1

    mm.InterruptProcessingException = InterruptProcessingException
    mm.throw_exception_if_processing_interrupted = throw
    mm.get_torch_device = lambda: types.SimpleNamespace(type="cpu", index=None)
    mm.unload_all_models = unload_all_models
    cu = types.ModuleType("comfy.utils")
    cu.ProgressBar = ProgressBar
    comfy_pkg = types.ModuleType("comfy")
    comfy_pkg.model_management, comfy_pkg.utils = mm, cu
    saved = {k: sys.modules.get(k) for k in ("folder_paths", "comfy", "comfy.model_management", "comfy.utils")}
    sys.modules.update({"folder_paths": fp, "comfy": comfy_pkg, "comfy.model_management": mm, "comfy.utils": cu})
    sys.path.insert(0, str(COMFY))
    try:
        pkg = importlib.import_module("odelt_nodes")
        yield types.SimpleNamespace(pkg=pkg, fp=fp, mm=mm, root=root)
    finally:
        sys.path.remove(str(COMFY))
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        for k in [k for k in sys.modules if k == "odelt_nodes" or k.startswith("odelt_nodes.")]:
            del sys.modules[k]


def test_classes_have_comfyuis_attributes(comfy):
    m = comfy.pkg.NODE_CLASS_MAPPINGS
    descriptors = comfy.pkg.HOLDER.get().nodes()
    assert {"ODEtODElCheckpointLoader", "ODElDepthSelector", "ODEtSampler", "ODEtDecode", "ODEtEmptyLatent"} <= set(m)
    # Left to ComfyUI (same values, same behaviour) or prefixed (plugin types).
    for left in ("SaveImage", "PreviewImage", "LoadLatent", "SaveLatent"):
        assert left not in m and f"odelt_{left}" not in m
    assert "VAELoader" not in m and m["odelt_VAELoader"].RETURN_TYPES == ("ODELT_VAE",)
    assert comfy.pkg.NODE_DISPLAY_NAME_MAPPINGS["odelt_VAELoader"].endswith("(odelt)")
    for key, cls in m.items():
        info = descriptors[cls.ODELT_CLASS_TYPE]
        it = cls.INPUT_TYPES()
        assert set(it) >= {"required", "hidden"} and it["hidden"]["unique_id"] == "UNIQUE_ID"
        assert list(it["required"]) == list(info["input"]["required"])
        assert isinstance(cls.RETURN_TYPES, tuple) and len(cls.RETURN_TYPES) == len(info["output"])
        assert cls.RETURN_NAMES == tuple(info["output_name"])
        assert cls.FUNCTION == "run" and callable(getattr(cls, cls.FUNCTION))
        assert cls.CATEGORY == info["category"] and cls.OUTPUT_NODE is info["output_node"]
        for t in cls.RETURN_TYPES:
            assert t in ("IMAGE", "LATENT", "MASK", "INT", "FLOAT", "STRING", "BOOLEAN") or t.startswith("ODELT_"), t
    sampler = m["ODEtSampler"].INPUT_TYPES()["required"]
    assert sampler["model"][0] == "ODELT_MODEL" and sampler["latent_image"][0] == "LATENT"
    assert sampler["seed"][1]["control_after_generate"] is True and sampler["steps"][1]["min"] == 1
    assert "tooltip" in sampler["steps"][1]
    assert m["ODEtODElCheckpointLoader"].RETURN_TYPES == ("ODELT_MODEL",)
    ckpt = m["ODEtODElCheckpointLoader"].INPUT_TYPES()["required"]["ckpt_name"][0]
    assert "fashion-dit.safetensors" in ckpt
    assert m["ODEtDecode"].INPUT_TYPES()["optional"]["vae"][0] == "ODELT_VAE"


def _generate(m, seed=42, steps=8, batch=10, labels="0,1,2,3,4,5,6,7,8,9"):
    L = m["ODEtODElCheckpointLoader"]()
    widgets = {n: s[1]["default"] for n, s in L.INPUT_TYPES()["required"].items() if len(s) > 1 and "default" in s[1]}
    (model,) = L.run(unique_id="1", ckpt_name="fashion-dit.safetensors", **widgets)
    (model,) = m["ODElDepthSelector"]().run(unique_id="2", model=model, active_blocks=0)
    (latent,) = m["ODEtEmptyLatent"]().run(unique_id="3", model=model, batch_size=batch)
    (samples,) = m["ODEtSampler"]().run(
        unique_id="4", model=model, latent_image=latent, seed=seed, steps=steps, solver="euler", tolerance=0.001,
        cfg=1.0, class_label=-1, denoise=1.0, add_noise=True, class_labels=labels)
    (image,) = m["ODEtDecode"]().run(unique_id="5", samples=samples)
    return model, latent, samples, image


def test_a_pixel_model_generation_with_numpy_values(comfy, tmp_path):
    m = comfy.pkg.NODE_CLASS_MAPPINGS
    ProgressBar.instances.clear()
    model, latent, samples, image = _generate(m, seed=7)
    assert isinstance(model, odelt.Handle) and model.type_name == "MODEL"
    assert isinstance(latent, dict) and latent["samples"].shape == (10, 1, 28, 28)
    assert isinstance(samples["samples"], np.ndarray)
    assert image.dtype == np.float32 and image.shape == (10, 28, 28, 3)
    # Progress reached ComfyUI's bar for the sampler node, once per evaluation, with previews.
    [bar] = [b for b in ProgressBar.instances if b.node_id == "4"]
    assert bar.total == 8 and [u[0] for u in bar.updates] == list(range(1, 9))

    # The same images as `odelt run` / Host.run for the same seed.
    host = odelt.Host(models_dir=MODELS, output_dir=tmp_path)
    r = host.run(GENERATE, set={"4.seed": 7})
    assert np.array_equal(r.latents["4"], samples["samples"]) and np.array_equal(r.images["5"], image)


def test_comfyuis_interrupt_stops_the_sampler_within_one_evaluation(comfy):
    m = comfy.pkg.NODE_CLASS_MAPPINGS
    ProgressBar.instances.clear()
    original = ProgressBar.update_absolute

    def update(self, value, total=None, preview=None):
        original(self, value, total, preview)
        if value == 3:
            comfy.mm.interrupted = True  # the user pressed Cancel

    ProgressBar.update_absolute = update
    try:
        with pytest.raises(InterruptProcessingException):
            _generate(m, steps=200, batch=2, labels="0,1")
    finally:
        ProgressBar.update_absolute = original
    [bar] = [b for b in ProgressBar.instances if b.node_id == "4"]
    assert [u[0] for u in bar.updates] == [1, 2, 3, 4] or [u[0] for u in bar.updates] == [1, 2, 3]


def test_free_memory_and_folders(comfy):
    import comfy.model_management as mm

    host = comfy.pkg.HOLDER.get()
    assert host.output_dir == str(comfy.root / "output") and host.models_dir == str(MODELS)
    assert host.device == "cpu"
    before = mm.unloaded
    mm.unload_all_models()  # what ComfyUI's "free memory" / "unload models" calls
    assert mm.unloaded == before + 1 and host.cache_len == 0


def test_the_example_ui_workflow_runs_through_the_node_classes(comfy, tmp_path):
    sys.path.insert(0, str(COMFY))
    try:
        from workflow_format import ui_to_api
    finally:
        sys.path.remove(str(COMFY))
    m = comfy.pkg.NODE_CLASS_MAPPINGS
    ui = json.loads((COMFY / "workflows" / "odelt_generate.json").read_text())
    info = {k: {"input": c.INPUT_TYPES()} for k, c in m.items()}
    info["SaveImage"] = {"input": {"required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "x"}]}}}
    api = ui_to_api(ui, info)
    assert {n["class_type"] for n in api.values()} == {
        "ODEtODElCheckpointLoader", "ODElDepthSelector", "ODEtEmptyLatent", "ODEtSampler", "ODEtDecode", "SaveImage"}
    # The UI workflow is the example API workflow (generate.json), node for node.
    expected = json.loads(GENERATE.read_text())
    for nid, node in api.items():
        want = dict(expected[nid]["inputs"])
        if node["class_type"] == "SaveImage":
            want["filename_prefix"] = "odelt/generate"
        assert node["inputs"] == want, nid
    # And it runs through the classes, as ComfyUI's executor would (SaveImage is ComfyUI's: checked by the host).
    outputs = {}
    for nid in ["1", "2", "3", "4", "5"]:
        node = api[nid]
        kwargs = {k: (outputs[v[0]][v[1]] if isinstance(v, list) else v) for k, v in node["inputs"].items()}
        outputs[nid] = m[node["class_type"]]().run(unique_id=nid, **kwargs)
    r = odelt.Host(models_dir=MODELS, output_dir=tmp_path).run(GENERATE)
    assert np.array_equal(outputs["5"][0], r.images["5"])


def test_model_folder_combos_use_comfyuis_names(comfy):
    # With ComfyUI's models folder as the plugin's, the plugin lists checkpoints/x; ComfyUI's loaders and saved
    # workflows name it x. The combo shows ComfyUI's names and a run maps them back.
    b = comfy.pkg.bridge
    plugin = ["checkpoints/a.safetensors", "b.safetensors", "checkpoints/b.safetensors"]
    assert b.comfy_model_choices(plugin, "checkpoints") == ["a.safetensors", "b.safetensors"]
    assert b.plugin_model_value("a.safetensors", plugin, "checkpoints") == "checkpoints/a.safetensors"
    assert b.plugin_model_value("b.safetensors", plugin, "checkpoints") == "b.safetensors"
    assert b.plugin_model_value("missing.safetensors", plugin, "checkpoints") == "missing.safetensors"
