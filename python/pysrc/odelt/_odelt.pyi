"""Type hints of odelt's native module (re-exported by ``odelt``)."""

from __future__ import annotations

import os
from typing import Any, Callable, Literal, Mapping, Optional, Sequence, TypedDict, Union

import numpy as np
import numpy.typing as npt

__version__: str
#: The odelt plugin contract version this host loads (plugins must match its major.minor).
CONTRACT_VERSION: str

StrPath = Union[str, "os.PathLike[str]"]
#: A workflow: an API-format dict (``{"1": {"class_type": ..., "inputs": {...}}}``) or a ``POST /prompt`` body
#: (``{"prompt": {...}, "extra_data": {"extra_pnginfo": {...}}}``), a path to such a JSON file, or JSON text.
WorkflowLike = Union[Mapping[str, Any], StrPath]
#: Input overrides: ``{"NODE.INPUT": value}`` or ``["NODE.INPUT=VALUE", ...]`` (VALUE parsed as JSON when it can be).
Overrides = Union[Mapping[str, Any], Sequence[str]]

class ProgressEvent(TypedDict, total=False):
    """What ``on_progress`` receives, on the calling thread, once per progress step of a node (the node waits
    for the callback). ``type`` is ``"progress"`` (``value``/``max``/``preview``) or ``"text"`` (``text``)."""

    type: Literal["progress", "text"]
    prompt_id: str
    node_id: str
    value: int
    max: int
    #: ``(format, width, height, data)``: format ``"rgb8"`` (raw RGB bytes), ``"png"`` or ``"jpeg"``; or None.
    preview: Optional[tuple[str, int, int, bytes]]
    text: str

#: Called with each progress event; raising stops the run within one evaluation and re-raises here.
ProgressCallback = Callable[[ProgressEvent], Any]

class CancelToken:
    """A flag that stops every run using it within one evaluation of the running node; ``cancel()`` may be
    called from any thread."""

    def __init__(self) -> None: ...
    def cancel(self) -> None:
        """Asks every run using this token to stop."""
    @property
    def cancelled(self) -> bool:
        """Whether ``cancel()`` was called (and not reset)."""
    def reset(self) -> None:
        """Clears the flag, to reuse the token."""

class Handle:
    """An opaque plugin object (MODEL, VAE, ...). The plugin's object (and its memory) stays alive while a handle
    to it lives; pass it to ``Host.call`` as the input of another node."""

    @property
    def type_name(self) -> str:
        """The socket type the plugin created it for, e.g. ``"MODEL"``."""
    def describe(self) -> str:
        """The plugin's description of the object."""
    def same_object(self, other: Handle) -> bool:
        """Whether both handles point to the same plugin object."""

class NodeOutput:
    """The result of ``Host.call``: ``values`` has one item per declared output (int, float, str, bool,
    ``numpy.ndarray`` for tensors, ``Handle`` for plugin objects); ``ui`` is an output node's UI payload
    (e.g. ``{"images": [{"filename", "subfolder", "type"}]}``) or None. Indexing reads ``values``."""

    values: tuple[Any, ...]
    ui: Optional[dict[str, Any]]
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> Any: ...

class RunResult:
    """A completed run."""

    #: The run's prompt id.
    prompt_id: str
    #: ``{node_id: ui}`` for every output node (ComfyUI's history ``outputs``).
    outputs: dict[str, Any]
    #: Absolute paths of the files the output nodes saved, in order.
    files: list[str]
    #: ``{node_id: float32 array [B, H, W, C] in 0..1}`` for each node of the plan with an IMAGE output.
    images: dict[str, npt.NDArray[np.float32]]
    #: ``{node_id: float32 array [B, C, H, W]}`` for each node of the plan with a LATENT output.
    latents: dict[str, npt.NDArray[np.float32]]
    #: Nodes that ran, in completion order.
    executed: list[str]
    #: Nodes served from the host's cache.
    cached: list[str]
    #: Wall time in seconds.
    elapsed: float
    def values(self, node_id: str) -> Optional[list[Any]]:
        """Every output value of node ``node_id`` (tensors as numpy arrays, MODEL/VAE as ``Handle``), or None
        when the node is not in the plan."""

class BatchItem:
    """One run of a batch."""

    index: int
    label: str
    prompt_id: str
    #: The result, when the item completed.
    result: Optional[RunResult]
    #: The exception the item raised (an ``odelt.OdeltError``), when it failed.
    error: Optional[BaseException]
    @property
    def ok(self) -> bool:
        """Whether the item completed."""
    def unwrap(self) -> RunResult:
        """The result, or raises the item's error."""

class Host:
    """A host: loaded plugins, their directories and device, and an executor whose output cache lets a batch
    reuse the models it loaded."""

    def __init__(
        self,
        plugins: Optional[Union[StrPath, Sequence[StrPath]]] = None,
        models_dir: Optional[StrPath] = None,
        output_dir: Optional[StrPath] = None,
        device: str = "cpu",
        input_dir: Optional[StrPath] = None,
        temp_dir: Optional[StrPath] = None,
        workers: Optional[int] = None,
        cache_runs: int = 1,
    ) -> None:
        """Loads the plugins and describes them for these directories (combo lists of checkpoints come from
        ``models_dir``).

        ``plugins``: plugin libraries or directories of them; by default the plugin bundled with the wheel, then
        the entries of ``ODELT_PLUGIN_PATH`` (colon-separated). Directories default to ``models``, ``output``,
        ``input`` and ``temp`` under the current directory, as for the ``odelt`` command. ``device``: ``"cpu"``
        or ``"cuda:N"`` (with a plugin built with CUDA). Raises ``PluginLoadError``."""
    def nodes(self) -> dict[str, Any]:
        """The ``/object_info`` dict of every loaded node, exactly what ``odelt nodes`` prints."""
    @property
    def plugins(self) -> list[dict[str, Any]]:
        """The loaded plugins: ``[{"name", "version", "contract_version", "path", "nodes"}]``."""
    @property
    def warnings(self) -> list[str]:
        """Problems met while looking for plugins."""
    @property
    def device(self) -> str: ...
    @property
    def models_dir(self) -> str: ...
    @property
    def output_dir(self) -> str: ...
    @property
    def input_dir(self) -> str: ...
    @property
    def temp_dir(self) -> str: ...
    @property
    def cache_len(self) -> int:
        """Number of cached node outputs."""
    def run(
        self,
        workflow: WorkflowLike,
        set: Optional[Overrides] = None,
        on_progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelToken] = None,
        extra_pnginfo: Optional[Mapping[str, Any]] = None,
        prompt_id: Optional[str] = None,
    ) -> RunResult:
        """Validates and runs a workflow once, as ``odelt run`` does (same seeds, same pixels).

        ``set`` overrides inputs (``{"4.seed": 7}``); ``on_progress`` receives progress events on this thread.
        Nodes run with the GIL released. Raises ``WorkflowError`` (malformed workflow or override),
        ``ValidationError`` (e.g. a checkpoint not in the models directory: ``exception_type ==
        "value_not_in_list"``), ``NodeError`` (a node failed, e.g. a refused pickle), ``Interrupted`` (cancelled),
        or ``KeyboardInterrupt`` (Ctrl-C, which stops the running node within one evaluation)."""
    def batch(
        self,
        workflow: WorkflowLike,
        target: Optional[str] = None,
        seeds: Optional[Sequence[int]] = None,
        values: Optional[Union[Mapping[str, Any], Sequence[Any]]] = None,
        set: Optional[Overrides] = None,
        on_progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelToken] = None,
        stop_on_error: bool = False,
        prompt_id: Optional[str] = None,
    ) -> list[BatchItem]:
        """Runs the workflow once per seed (``seeds=[1, 2, 3]``, labels ``"seed=N"``) or per value
        (``values={"label": v}`` or ``values=[v, ...]``), each written to ``target`` (``"NODE.INPUT"``; for seeds
        it defaults to the one node with a ``seed`` input). Runs go one after the other on this host, so unchanged
        nodes (the model loader) come from cache. A failed item carries its exception in ``error``; a cancellation
        stops the batch."""
    def call(
        self,
        class_type: str,
        inputs: Optional[Mapping[str, Any]] = None,
        *,
        node_id: str = "0",
        on_progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelToken] = None,
        prompt: Optional[Mapping[str, Any]] = None,
        extra_pnginfo: Optional[Mapping[str, Any]] = None,
        prompt_id: Optional[str] = None,
    ) -> NodeOutput:
        """Runs one node with Python values, outside any workflow (no cache).

        Widget inputs (int, float, str, bool, combo choices) are checked as in a workflow (ranges, choices); a
        missing input with a default takes it. IMAGE/LATENT/MASK inputs take float32 numpy arrays (or anything
        ``numpy.asarray`` takes; a LATENT may also be ComfyUI's ``{"samples": array}``); MODEL/VAE inputs take the
        ``Handle`` another call returned. Raises ``ValidationError`` for bad inputs, ``NodeError`` when the node
        fails, ``Interrupted`` when cancelled."""
    def interrupt(self) -> None:
        """Stops every run, batch and call of this host now in progress, within one evaluation."""
    def free(self, unload_models: bool = True, free_memory: bool = True) -> list[str]:
        """ComfyUI's "free memory": drops the output cache and asks the plugins to drop the models they keep.
        Returns the plugins' errors, if any."""

def _set_bundled_plugin_dir(path: StrPath) -> None: ...
