"""Keep BatchNorm running statistics out of SAM's perturbed forward pass."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.nn.modules.batchnorm import _BatchNorm


@contextmanager
def frozen_bn_stats(model: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """Run the enclosed forward passes without updating BatchNorm running statistics.

    The perturbed pass of a look step sees weights w + ε that are never kept, so its batch
    statistics must not leak into ``running_mean``/``running_var``/``num_batches_tracked``. Inside
    the context every BatchNorm layer still normalises with the batch's own statistics (training
    behaviour is unchanged); only the bookkeeping is switched off, exactly and reversibly, by
    clearing ``track_running_stats`` — unlike the common momentum=0 trick, which still bumps
    ``num_batches_tracked`` and breaks cumulative averaging (momentum=None).

    Args:
        model: the module whose BatchNorm layers (any ``_BatchNorm`` subclass) are frozen.
        enabled: ``False`` makes the context a no-op, so one closure serves both passes.

    Example::

        def closure():
            opt.zero_grad()
            with frozen_bn_stats(model, enabled=opt.in_second_pass):
                loss = loss_fn(model(x), y)
            loss.backward()
            return loss
    """
    if not enabled:
        yield
        return
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    previous = [m.track_running_stats for m in layers]
    try:
        for m in layers:
            m.track_running_stats = False
        yield
    finally:
        for m, tracked in zip(layers, previous, strict=True):
            m.track_running_stats = tracked
