"""Exceptions raised by :mod:`odelt`.

Every error is an :class:`OdeltError` carrying ComfyUI's error type in ``exception_type`` (``"value_not_in_list"``,
``"RuntimeError"``, ``"InterruptProcessingException"``, ...) and, where one node is to blame, its ``node_id`` and
``class_type``. Each also derives from the matching built-in exception, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = [
    "OdeltError",
    "WorkflowError",
    "ValidationError",
    "NodeError",
    "Interrupted",
    "PluginLoadError",
]


class OdeltError(Exception):
    """Base class of odelt's errors."""

    exception_type: str
    node_id: Optional[str]
    class_type: Optional[str]
    prompt_id: Optional[str]
    details: Any

    def __init__(
        self,
        message: str,
        *,
        exception_type: str = "",
        node_id: Optional[str] = None,
        class_type: Optional[str] = None,
        prompt_id: Optional[str] = None,
        details: Any = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exception_type = exception_type
        self.node_id = node_id
        self.class_type = class_type
        self.prompt_id = prompt_id
        self.details = details
        for k, v in extra.items():
            setattr(self, k, v)


class WorkflowError(OdeltError, ValueError):
    """The workflow is not usable: not JSON, not an object of nodes, a bad ``set=`` override
    (``exception_type`` is ComfyUI's ``"invalid_prompt"``)."""


class ValidationError(OdeltError, ValueError):
    """The host refused the workflow (or a call's inputs) before anything ran: ComfyUI's 400 answer.

    ``error`` is the top-level error object, ``node_errors`` the per-node errors keyed by node id;
    ``exception_type`` is the type of the first node error (e.g. ``"value_not_in_list"`` for a checkpoint that is
    not in the models directory) and ``node_id`` its node.
    """

    error: Any = None
    node_errors: Any = None


class NodeError(OdeltError, RuntimeError):
    """A node failed while running. ``exception_type`` is ComfyUI's (``"RuntimeError"``, ``"ValueError"`` for an
    invalid input, ``"OutOfMemoryError"``, ``"Panic"``); ``executed`` lists the nodes that had completed."""

    executed: Any = None


class Interrupted(OdeltError):
    """The run was cancelled (``CancelToken.cancel()``, ``Host.interrupt()``, or a progress callback that raised);
    ``exception_type`` is ``"InterruptProcessingException"`` and ``node_id`` the node that stopped."""

    executed: Any = None


class PluginLoadError(OdeltError, ImportError):
    """No plugin could be loaded, or a plugin is incompatible with this host."""
