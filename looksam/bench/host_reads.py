"""Counting host reads in an optimizer step: the calls that make a GPU wait for the host.

The optimizer tests hold every entry to its registry ``host_read_allowance`` with this counter on
any device (a CPU has no sync to pay for, but these are the calls that would sync on a GPU); the
GPU bench adds CUDA's own sync warnings on top.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


def _always(*_: Any, **__: Any) -> bool:
    return True


def _names_the_cpu(device: Any) -> bool:
    if isinstance(device, str):
        return device.split(":")[0] == "cpu"
    return isinstance(device, torch.device) and device.type == "cpu"


def _to_the_cpu(*args: Any, **kwargs: Any) -> bool:
    """``t.to("cpu")``, ``t.to(torch.device("cpu"), …)``, ``t.to(device="cpu")``; not a dtype
    or another tensor's device (which is the device, on the path an accelerator takes)."""
    return _names_the_cpu(kwargs.get("device")) or any(_names_the_cpu(a) for a in args)


def _bool_mask(index: Any, *_: Any) -> bool:
    """``t[mask]`` / ``t[mask] = v`` with a boolean tensor: its size is only known on the host."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in parts)


#: The Tensor methods that wait for the device (each is one sync on CUDA), with the test of a
#: call's arguments that says whether this call does: the value reads, ``nonzero`` (whose output
#: size is data-dependent), boolean-mask indexing, and a copy to the CPU.
HOST_READ_METHODS: dict[str, Callable[..., bool]] = {
    "item": _always,
    "tolist": _always,
    "__float__": _always,
    "__int__": _always,
    "__bool__": _always,
    "__index__": _always,
    "nonzero": _always,
    "cpu": _always,
    "to": _to_the_cpu,
    "__getitem__": _bool_mask,
    "__setitem__": _bool_mask,
}
#: torch functions that wait for the device like the methods above.
HOST_READ_FUNCTIONS = ("nonzero", "masked_select")
_SYNC_WARNING = "synchronizing"


def _site(filename: str, lineno: int) -> str:
    """``looksam/optim/_foreach.py:43``: a path from the package down, or the file's name."""
    parts = Path(filename).parts
    for anchor in ("looksam", "torch"):
        if anchor in parts:
            i = len(parts) - 1 - parts[::-1].index(anchor)
            return f"{'/'.join(parts[i:])}:{lineno}"
    return f"{Path(filename).name}:{lineno}"


@dataclass
class StepReads:
    """What one optimizer step did outside its closure."""

    host_reads: int = 0
    syncs: int | None = None  # sync-debug warnings (CUDA only; None: not watched)
    sites: Counter[str] = field(default_factory=Counter)  # file:line → count, reads and syncs


class HostReadCounter:
    """Counts host reads (and, on CUDA, sync warnings) inside an optimizer's ``step``.

    Use :func:`count_step_host_reads`; :attr:`steps` holds one :class:`StepReads` per ``step``
    call. The closure the step calls (the model's forward and backward) is not counted.
    """

    def __init__(self, sync_debug: bool = False) -> None:
        self.sync_debug = sync_debug
        self.steps: list[StepReads] = []
        self._counting = False
        self._depth = 0  # float(t) may call item() inside: count the outermost read only
        self._current: StepReads | None = None
        self._caught: list[warnings.WarningMessage] = []
        self._mark = 0

    def _read(self, method: str) -> None:
        if self._counting and self._depth == 0 and self._current is not None:
            self._current.host_reads += 1
            frame = sys._getframe(2)  # the wrapper's caller
            self._current.sites[_site(frame.f_code.co_filename, frame.f_lineno)] += 1

    def _resume(self) -> None:
        self._counting = True
        if self.sync_debug:
            self._mark = len(self._caught)
            torch.cuda.set_sync_debug_mode("warn")

    def _pause(self) -> None:
        if self.sync_debug:
            torch.cuda.set_sync_debug_mode(0)
            current = self._current
            for caught in self._caught[self._mark :]:
                if current is not None and _SYNC_WARNING in str(caught.message):
                    current.syncs = (current.syncs or 0) + 1
                    current.sites[f"sync@{_site(caught.filename, caught.lineno)}"] += 1
            self._mark = len(self._caught)
        self._counting = False

    def _method(
        self, name: str, original: Callable[..., Any], reads: Callable[..., bool] = _always
    ) -> Callable[..., Any]:
        def read(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if self._counting and reads(*args, **kwargs):
                self._read(name)
            self._depth += 1
            try:
                return original(tensor, *args, **kwargs)
            finally:
                self._depth -= 1

        return read

    def _closure(self, closure: Callable[..., Any]) -> Callable[..., Any]:
        def uncounted(*args: Any, **kwargs: Any) -> Any:  # a BatchClosure's too
            self._pause()
            try:
                return closure(*args, **kwargs)
            finally:
                self._resume()

        return uncounted

    def _step(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def step(*args: Any, **kwargs: Any) -> Any:
            if args and callable(args[0]):
                args = (self._closure(args[0]), *args[1:])
            elif callable(kwargs.get("closure")):
                kwargs["closure"] = self._closure(kwargs["closure"])
            self._current = StepReads(syncs=0 if self.sync_debug else None)
            self.steps.append(self._current)
            self._resume()
            try:
                return original(*args, **kwargs)
            finally:
                self._pause()
                self._current = None

        return step


@contextlib.contextmanager
def count_step_host_reads(
    optimizer: torch.optim.Optimizer, *, sync_debug: bool = False
) -> Iterator[HostReadCounter]:
    """Count the host reads of every ``optimizer.step`` call made inside the block.

    ``torch.Tensor``'s host-reading methods (:data:`HOST_READ_METHODS`) and the torch functions
    in :data:`HOST_READ_FUNCTIONS` are wrapped while the block runs and ``optimizer.step`` is
    wrapped on the instance; all are restored afterwards.
    Reads made by the closure the step calls (forward and backward) are not counted, nor
    anything outside ``step``. With ``sync_debug`` (CUDA), ``torch.cuda.set_sync_debug_mode``
    is ``"warn"`` only while the step's own code runs, and its warnings are counted per step;
    other warnings raised meanwhile are re-issued after the block.
    """
    counter = HostReadCounter(sync_debug=sync_debug)
    patched: dict[str, Any] = {}
    functions = {name: getattr(torch, name) for name in HOST_READ_FUNCTIONS}
    had_step = "step" in vars(optimizer)
    own_step = vars(optimizer).get("step")
    previous_mode = torch.cuda.get_sync_debug_mode() if sync_debug else 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        counter._caught = caught
        try:
            for name, reads in HOST_READ_METHODS.items():
                patched[name] = torch.Tensor.__dict__.get(name)
                wrapped = counter._method(name, getattr(torch.Tensor, name), reads)
                setattr(torch.Tensor, name, wrapped)
            for name, function in functions.items():
                setattr(torch, name, counter._method(name, function))
            optimizer.step = counter._step(optimizer.step)  # type: ignore[method-assign]
            yield counter
        finally:
            if had_step:
                optimizer.step = own_step  # type: ignore[method-assign,assignment]
            else:
                del optimizer.step
            for name, function in functions.items():
                setattr(torch, name, function)
            for name, original in patched.items():
                if original is None:
                    delattr(torch.Tensor, name)
                else:
                    setattr(torch.Tensor, name, original)
            if sync_debug:
                torch.cuda.set_sync_debug_mode(previous_mode)
    for message in caught:
        if _SYNC_WARNING not in str(message.message):
            warnings.warn_explicit(
                message.message, message.category, message.filename, message.lineno
            )
