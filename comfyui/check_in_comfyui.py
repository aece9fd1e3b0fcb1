#!/usr/bin/env python3
"""Checks odelt's nodes in a real ComfyUI: installs the odelt wheel and the node package into a ComfyUI checkout,
starts ComfyUI on loopback with --cpu, queues the example UI workflow (comfyui/workflows/odelt_generate.json) through
ComfyUI's own HTTP API, and checks that the PNGs ComfyUI's SaveImage wrote have the pixels `odelt run` gives for
examples/workflows/generate.json.

    python/build-and-test.sh                       # builds target/wheels/odelt-*.whl (and tests it)
    python3 comfyui/check_in_comfyui.py --comfyui ~/ComfyUI [--python ~/ComfyUI/venv/bin/python] [--port 8199]

Needs a ComfyUI checkout whose Python has ComfyUI's requirements installed (torch CPU is enough). It links
comfyui/odelt_nodes into custom_nodes/ and models/fashion-dit.safetensors into models/checkpoints/ (nothing is copied
into the repository). Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from workflow_format import ui_to_api  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, body: object = None, timeout: float = 30) -> object:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:  # ComfyUI explains a 400 (validation) in the body
        raise SystemExit(f"{req.get_method()} {url}: HTTP {e.code}: {e.read().decode(errors='replace')[:4000]}")


def pixels(path: str, py: str) -> list:
    """The RGB pixels of a PNG, read by the given Python's Pillow (ComfyUI has it)."""
    code = "import sys,json;from PIL import Image;print(json.dumps(list(Image.open(sys.argv[1]).convert('RGB').getdata())))"
    return json.loads(subprocess.run([py, "-c", code, path], capture_output=True, text=True, check=True).stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui", required=True, type=Path, help="the ComfyUI checkout (with main.py)")
    ap.add_argument("--python", help="ComfyUI's Python (default: <comfyui>/venv/bin/python, else python3)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--wheel", help="the odelt wheel (default: target/wheels/odelt-*.whl)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds for ComfyUI to start and run")
    a = ap.parse_args()
    comfy = a.comfyui.resolve()
    if not (comfy / "main.py").is_file():
        sys.exit(f"{comfy} is not a ComfyUI checkout (no main.py)")
    py = a.python or (str(comfy / "venv" / "bin" / "python") if (comfy / "venv" / "bin" / "python").exists() else "python3")
    wheels = [a.wheel] if a.wheel else sorted(glob.glob(str(REPO / "target" / "wheels" / "odelt-*.whl")))
    if not wheels:
        sys.exit("no odelt wheel: run python/build-and-test.sh first")
    odelt_bin = REPO / "target" / "release" / "odelt"

    print(f"== installing {Path(wheels[-1]).name} into {py}")
    subprocess.run([py, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", wheels[-1]], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "numpy"], check=True)
    link = comfy / "custom_nodes" / "odelt_nodes"
    if link.is_symlink() or not link.exists():
        if link.is_symlink():
            link.unlink()
        link.symlink_to(REPO / "comfyui" / "odelt_nodes")
    ckpt = comfy / "models" / "checkpoints" / "fashion-dit.safetensors"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    if not ckpt.exists():
        ckpt.symlink_to(REPO / "models" / "fashion-dit.safetensors")
    version = subprocess.run([py, "-c", "import comfyui_version as v; print(v.__version__)"], cwd=comfy,
                             capture_output=True, text=True).stdout.strip() or "unknown"

    work = Path(tempfile.mkdtemp(prefix="odelt-comfy-"))
    out_dir = work / "output"
    port = a.port or free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(work / "comfyui.log", "w")
    print(f"== starting ComfyUI {version} on {base} (log: {work / 'comfyui.log'})")
    server = subprocess.Popen(
        [py, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--output-directory", str(out_dir),
         "--disable-auto-launch"],
        cwd=comfy, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, ODELT_DEVICE="cpu"),
    )
    failures = []
    try:
        deadline = time.monotonic() + a.timeout
        info = None
        while time.monotonic() < deadline:
            if server.poll() is not None:
                sys.exit(f"ComfyUI exited ({server.returncode}); see {work / 'comfyui.log'}")
            try:
                info = http(f"{base}/object_info")
                break
            except OSError:
                time.sleep(1)
        if info is None:
            sys.exit("ComfyUI did not start in time")
        ours = {k: v for k, v in info.items() if v.get("python_module", "").endswith("odelt_nodes")}
        print(f"== {len(ours)} odelt nodes: " + ", ".join(f"{k} [{v['category']}]" for k, v in sorted(ours.items())))
        for need in ("ODEtODElCheckpointLoader", "ODElDepthSelector", "ODEtSampler", "ODEtDecode", "ODEtEmptyLatent"):
            if need not in info:
                failures.append(f"node {need} is not registered")
        if "fashion-dit.safetensors" not in info.get("ODEtODElCheckpointLoader", {}).get("input", {}).get(
                "required", {}).get("ckpt_name", [[]])[0]:
            failures.append("fashion-dit.safetensors is not in the checkpoint combo")

        ui = json.loads((REPO / "comfyui" / "workflows" / "odelt_generate.json").read_text())
        api = ui_to_api(ui, info)
        queued = http(f"{base}/prompt", {"prompt": api, "extra_data": {"extra_pnginfo": {"workflow": ui}}})
        pid = queued["prompt_id"]
        print(f"== queued {pid}")
        hist = None
        while time.monotonic() < deadline:
            h = http(f"{base}/history/{pid}")
            if pid in h and h[pid].get("status", {}).get("completed") is not None:
                hist = h[pid]
                if hist["status"].get("status_str") in ("success", "error"):
                    break
            time.sleep(0.5)
        if hist is None or hist["status"].get("status_str") != "success":
            failures.append(f"the prompt did not succeed: {json.dumps(hist and hist.get('status'))[:2000]}")
        else:
            images = hist["outputs"]["6"]["images"]
            files = [out_dir / i["subfolder"] / i["filename"] for i in images]
            print(f"== ComfyUI's SaveImage wrote {len(files)} PNGs")
            if len(files) != 10:
                failures.append(f"expected 10 images, got {len(files)}")
            cli_out = work / "cli"
            subprocess.run([str(odelt_bin), "run", str(REPO / "examples" / "workflows" / "generate.json"),
                            "--models-dir", str(REPO / "models"), "--output-dir", str(cli_out), "-q"],
                           check=True, capture_output=True, cwd=work)
            cli = sorted((cli_out / "fashion").glob("generate_*.png"))
            if len(cli) != len(files):
                failures.append(f"odelt run wrote {len(cli)} PNGs, ComfyUI {len(files)}")
            for f, c in zip(sorted(files), cli):
                if pixels(str(f), py) != pixels(str(c), py):
                    failures.append(f"{f.name} differs from odelt run's {c.name}")
            if not failures:
                print(f"== the {len(files)} images equal `odelt run`'s, pixel for pixel (RGB values by Pillow)")
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    for f in failures:
        print(f"FAILED: {f}")
    print(f"ComfyUI {version}: {'ok' if not failures else 'FAILED'} ({work})")
    if not failures:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
