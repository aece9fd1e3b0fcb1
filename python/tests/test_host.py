"""The `odelt` Python module against the `odelt` command: same nodes, same pixels; overrides, batches, progress,
cancellation, errors, and single-node calls."""

from __future__ import annotations

import copy
import itertools
import json
import os
import pickle
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import odelt
from conftest import GENERATE, MODELS, REPO, clean_env, odelt_bin, read_png


def test_the_wheel_carries_the_plugin_and_type_hints():
    pkg = Path(odelt.__file__).parent
    assert list(Path(odelt.BUNDLED_PLUGIN_DIR).glob("libodelt_plugin*")), odelt.BUNDLED_PLUGIN_DIR
    assert (pkg / "_odelt.pyi").is_file() and (pkg / "py.typed").is_file()
    assert odelt.Host.run.__doc__ and odelt.Host.call.__doc__
    assert odelt.CONTRACT_VERSION


def test_nodes_equal_odelt_nodes(host):
    cli = subprocess.run(
        [odelt_bin(), "nodes", "--models-dir", MODELS, "--compact"],
        capture_output=True, text=True, check=True, env=clean_env(),
    )
    assert host.nodes() == json.loads(cli.stdout)
    assert "fashion-dit.safetensors" in host.nodes()["ODEtODElCheckpointLoader"]["input"]["required"]["ckpt_name"][0]
    [plugin] = host.plugins
    assert plugin["name"] and "ODEtSampler" in plugin["nodes"]


def test_run_gives_the_pixels_of_odelt_run(host, tmp_path):
    cli_out = tmp_path / "cli"
    subprocess.run(
        [odelt_bin(), "run", GENERATE, "--models-dir", MODELS, "--output-dir", cli_out, "--temp-dir", tmp_path / "t",
         "--set", "4.seed=7", "-q"],
        capture_output=True, check=True, env=clean_env(), cwd=tmp_path,
    )
    cli_pngs = sorted((cli_out / "fashion").glob("generate_*.png"))
    assert len(cli_pngs) == 10

    r = host.run(GENERATE, set={"4.seed": 7})
    assert len(r.files) == 10 and all(Path(f).is_file() for f in r.files)
    assert all(f.startswith(str(Path(host.output_dir) / "fashion")) for f in r.files)
    ours = sorted(r.files)[-10:]
    for a, b in zip(cli_pngs, ours):
        assert np.array_equal(read_png(a), read_png(b)), (a, b)

    img = r.images["5"]
    assert img.dtype == np.float32 and img.shape == (10, 28, 28, 3)
    assert 0.0 <= img.min() and img.max() <= 1.0
    first = read_png(cli_pngs[0])[..., :3].astype(np.int32)
    assert np.abs(np.rint(img[0] * 255).astype(np.int32) - first).max() <= 1
    assert r.latents["4"].shape == (10, 1, 28, 28)
    assert r.outputs["6"]["images"][0]["subfolder"] == "fashion"
    assert set(r.executed) == {"1", "2", "3", "4", "5", "6"}
    [model] = r.values("1")
    assert isinstance(model, odelt.Handle) and model.type_name == "MODEL"


def test_overrides(host, small):
    a = host.run(small, set={"4.seed": 7, "6.filename_prefix": "py/ov"}).latents["4"]
    b = host.run(small, set={"4.seed": 8, "6.filename_prefix": "py/ov"}).latents["4"]
    c = host.run(small, set=["4.seed=7", '6.filename_prefix="py/ov"']).latents["4"]
    assert a.shape == (2, 1, 28, 28)
    assert not np.array_equal(a, b) and np.array_equal(a, c)
    assert host.run(small, set={"3.batch_size": 1, "4.class_labels": "3"}).images["5"].shape == (1, 28, 28, 3)
    with pytest.raises(odelt.WorkflowError) as e:
        host.run(small, set={"99.seed": 1})
    assert e.value.exception_type == "invalid_prompt" and "99" in str(e.value)
    with pytest.raises(odelt.WorkflowError):
        host.run(small, set={"noinput": 1})
    # The run reads the dict; the caller's dict is not changed.
    assert small["4"]["inputs"]["seed"] == 42


def test_batch_over_seeds_reuses_the_loaded_model(host, small):
    items = host.batch(small, seeds=[1, 2, 1], set={"6.filename_prefix": "py/batch"})
    assert [i.label for i in items] == ["seed=1", "seed=2", "seed=1"]
    assert all(i.ok and i.error is None for i in items)
    lat = [i.result.latents["4"] for i in items]
    assert not np.array_equal(lat[0], lat[1]) and np.array_equal(lat[0], lat[2])
    assert "1" in items[1].result.cached, "the loader comes from cache"
    single = host.run(small, set={"4.seed": 2, "6.filename_prefix": "py/batch"}).latents["4"]
    assert np.array_equal(single, lat[1])

    by_value = host.batch(small, target="4.steps", values={"one": 1, "three": 3})
    assert [i.label for i in by_value] == ["one", "three"]
    bad = host.batch(small, target="1.ckpt_name", values=["nope.safetensors"])
    assert not bad[0].ok and isinstance(bad[0].error, odelt.ValidationError)
    with pytest.raises(odelt.ValidationError):
        bad[0].unwrap()


def test_progress_callbacks(host, workflow):
    events = []
    r = host.run(workflow, set={"6.filename_prefix": "py/progress"}, on_progress=events.append)
    sampler = [e for e in events if e["type"] == "progress" and e["node_id"] == "4"]
    assert [e["value"] for e in sampler] == list(range(1, 9))
    assert all(e["max"] == 8 and e["prompt_id"] == r.prompt_id for e in sampler)
    fmt, w, h, data = sampler[-1]["preview"]
    assert fmt in ("rgb8", "png", "jpeg") and w > 0 and h > 0 and len(data) > 0
    assert threading.current_thread() is threading.main_thread()


_LONG_RUNS = itertools.count(1000)


def _long(workflow):
    # Long enough that no test's stop (after 3 steps, 20 ticks, 0.5 s) can come after the end on a fast CPU, and a
    # fresh seed each time, so that a run which did finish never serves a later test from the host's cache (no
    # progress events, nothing to stop).
    wf = copy.deepcopy(workflow)
    wf["4"]["inputs"]["steps"] = 4000
    wf["4"]["inputs"]["seed"] = next(_LONG_RUNS)
    wf["6"]["inputs"]["filename_prefix"] = "py/never"
    return wf


def test_cancel_within_one_evaluation(host, workflow):
    token = odelt.CancelToken()
    seen = []

    def on_progress(e):
        if e["type"] != "progress":
            return
        seen.append(e["value"])
        if e["value"] == 3:
            token.cancel()

    with pytest.raises(odelt.Interrupted) as e:
        host.run(_long(workflow), on_progress=on_progress, cancel=token)
    assert e.value.exception_type == "InterruptProcessingException" and e.value.node_id == "4"
    assert seen[-1] == 3, seen
    assert not (Path(host.output_dir) / "py" / "never").exists() or not any(
        (Path(host.output_dir) / "py").glob("never*")
    )

    # A callback that raises stops the run the same way, and its exception comes back.
    seen.clear()

    def boom(e):
        if e["type"] != "progress":
            return
        seen.append(e["value"])
        if e["value"] == 2:
            raise LookupError("stop here")

    with pytest.raises(LookupError):
        host.run(_long(workflow), on_progress=boom)
    assert seen[-1] == 2, seen


def test_cancel_from_another_thread_while_the_gil_is_released(host, workflow):
    token = odelt.CancelToken()
    ticks = []
    stop = threading.Event()

    def other():
        # Runs Python code while the main thread is inside host.run: the GIL is free.
        while not stop.is_set():
            ticks.append(time.monotonic())
            if len(ticks) == 20:
                token.cancel()
            time.sleep(0.01)

    t = threading.Thread(target=other)
    start = time.monotonic()
    t.start()
    try:
        with pytest.raises(odelt.Interrupted):
            host.run(_long(workflow), cancel=token)
    finally:
        stop.set()
        t.join()
    assert time.monotonic() - start < 10
    assert len(ticks) >= 20


def test_host_interrupt_stops_a_run_of_another_thread(host, workflow):
    errors = []

    def run():
        try:
            host.run(_long(workflow))
        except odelt.Interrupted as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    host.interrupt()
    t.join(timeout=10)
    assert not t.is_alive() and len(errors) == 1


@pytest.fixture
def sigint_handled():
    # A process started in the background by a non-interactive shell inherits SIGINT as ignored, and then Python
    # installs no KeyboardInterrupt handler (interrupt_main and a real SIGINT do nothing): install it here.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_keyboard_interrupt_stops_the_run(host, workflow, sigint_handled):
    import _thread

    seen = []

    def on_progress(e):
        if e["type"] != "progress":
            return
        seen.append(e["value"])
        if e["value"] == 3:
            _thread.interrupt_main()

    with pytest.raises(KeyboardInterrupt):
        host.run(_long(workflow), on_progress=on_progress)
    assert seen[-1] == 3, seen

    # A real SIGINT, with no callback: noticed within the 50 ms wait.
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    start = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        host.run(_long(workflow))
    assert time.monotonic() - start < 10
    # The host is still usable.
    assert host.run(_long(workflow), set={"4.steps": 1}).images["5"].shape[0] == 10


def test_malformed_workflows_raise(host):
    with pytest.raises(odelt.WorkflowError) as e:
        host.run("{not json")
    assert isinstance(e.value, ValueError) and e.value.exception_type == "invalid_prompt"
    with pytest.raises(odelt.WorkflowError):
        host.run({"1": "not a node"})
    with pytest.raises(odelt.WorkflowError):
        host.run({"1": {"inputs": {}}})
    with pytest.raises(odelt.WorkflowError):
        host.run(REPO / "does-not-exist.json")
    with pytest.raises(TypeError):
        host.run(42)
    with pytest.raises(odelt.ValidationError) as e:
        host.run({"1": {"class_type": "NoSuchNode", "inputs": {}}})
    assert e.value.exception_type == "missing_node_type"
    with pytest.raises(odelt.ValidationError) as e:
        host.run({"5": {"class_type": "ODEtDecode", "inputs": {"samples": ["9", 0]}},
                  "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "x"}}})
    assert e.value.node_errors


def test_missing_checkpoint_raises_a_validation_error(host, small):
    with pytest.raises(odelt.ValidationError) as e:
        host.run(small, set={"1.ckpt_name": "missing.safetensors"})
    err = e.value
    assert err.exception_type == "value_not_in_list"
    assert err.node_id == "1" and err.class_type == "ODEtODElCheckpointLoader"
    assert "missing.safetensors" in str(err) and "1" in err.node_errors


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_hostile_pickle_is_refused_and_nothing_runs(tmp_path, small):
    marker = tmp_path / "pwned"
    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    (models / "checkpoints" / "evil.pkl").write_bytes(pickle.dumps({"params": _Evil(marker)}, protocol=2))
    h = odelt.Host(models_dir=models, output_dir=tmp_path / "out")
    choices = h.nodes()["ODEtODElCheckpointLoader"]["input"]["required"]["ckpt_name"][0]
    [name] = [c for c in choices if c.endswith("evil.pkl")]
    with pytest.raises(odelt.OdeltError) as e:
        h.run(small, set={"1.ckpt_name": name})
    assert e.value.node_id == "1", e.value
    assert "system" in str(e.value), str(e.value)
    assert isinstance(e.value, (odelt.NodeError, odelt.ValidationError))
    with pytest.raises(odelt.OdeltError):
        h.call("ODEtODElCheckpointLoader", {"ckpt_name": name})
    assert not marker.exists(), "the pickle's code ran"


def test_call_runs_single_nodes_with_python_values(host, small):
    [model] = host.call("ODEtODElCheckpointLoader", {"ckpt_name": "fashion-dit.safetensors"}).values
    assert isinstance(model, odelt.Handle) and model.type_name == "MODEL" and "Handle" in repr(model)
    [model] = host.call("ODElDepthSelector", {"model": model, "active_blocks": 0})
    [latent] = host.call("ODEtEmptyLatent", {"model": model, "batch_size": 2}).values
    assert isinstance(latent, np.ndarray) and latent.dtype == np.float32 and latent.shape == (2, 1, 28, 28)
    progress = []
    sampler_inputs = dict(small["4"]["inputs"], model=model, latent_image=latent, seed=5)
    out = host.call("ODEtSampler", sampler_inputs, node_id="4", on_progress=progress.append)
    [samples] = out.values
    assert out.ui is None and samples.shape == (2, 1, 28, 28)
    steps = [p for p in progress if p["type"] == "progress"]
    assert [p["value"] for p in steps] == [1, 2] and steps[0]["node_id"] == "4"
    [image] = host.call("ODEtDecode", {"samples": {"samples": samples}}).values
    assert image.shape == (2, 28, 28, 3)

    # The same as the workflow for the same seed.
    r = host.run(small, set={"4.seed": 5, "6.filename_prefix": "py/call"})
    assert np.array_equal(r.latents["4"], samples) and np.array_equal(r.images["5"], image)

    # An output node returns its UI payload; the files are in the output directory.
    saved = host.call("SaveImage", {"images": image, "filename_prefix": "py/call_save"})
    assert saved.values == () and len(saved.ui["images"]) == 2
    assert (Path(host.output_dir) / "py" / saved.ui["images"][0]["filename"]).is_file()

    with pytest.raises(odelt.ValidationError) as e:
        host.call("ODEtEmptyLatent", {"model": model, "batch_size": 0})
    assert e.value.exception_type == "value_smaller_than_min"
    with pytest.raises(odelt.ValidationError) as e:
        host.call("ODEtEmptyLatent", {"model": model, "nope": 1})
    with pytest.raises(odelt.ValidationError) as e:
        host.call("NoSuchNode", {})
    assert e.value.exception_type == "missing_node_type"
    with pytest.raises(odelt.NodeError) as e:
        host.call("ODEtDecode", {"samples": np.zeros((1, 2, 3), dtype=np.float32)}, node_id="9")
    assert e.value.node_id == "9" and e.value.exception_type in ("RuntimeError", "ValueError")


def test_free_drops_the_cache(host, small):
    host.run(small, set={"6.filename_prefix": "py/free"})
    assert host.cache_len > 0
    assert host.free() == []
    assert host.cache_len == 0


def test_explicit_plugins_and_errors(tmp_path):
    with pytest.raises(odelt.PluginLoadError):
        odelt.Host(plugins=[tmp_path / "missing.so"])
    with pytest.raises(odelt.PluginLoadError):
        odelt.Host(plugins=[tmp_path])  # an empty directory: no plugins
    h = odelt.Host(plugins=odelt.BUNDLED_PLUGIN_DIR, models_dir=MODELS)
    assert "ODEtSampler" in h.nodes()
