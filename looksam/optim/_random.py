"""The random numbers of the methods that draw them (G-RST's coin, ESAM's mask, RWP's noise).

Each method owns its generators, so a run is reproducible from its seed and a checkpoint resumes
the very draws an uninterrupted run makes, whatever else uses torch's global RNG.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import Tensor

#: Seeds are integers in [0, 2⁶⁴), what ``torch.Generator.manual_seed`` takes.
SEED_LIMIT = 2**64


def check_seed(seed: int | None) -> int | None:
    """Validate a generator seed: None (draw one from torch's global RNG) or an int in [0, 2⁶⁴)."""
    if seed is None:
        return None
    if (
        isinstance(seed, bool)
        or not isinstance(seed, numbers.Integral)
        or not 0 <= seed < SEED_LIMIT
    ):
        raise ValueError(
            "seed must be None (drawn from torch's global RNG) or an integer in [0, 2**64), "
            f"got {seed!r}"
        )
    return int(seed)


def draw_seed(seed: int | None) -> int:
    """``seed``, or one drawn from torch's global RNG when it is None: a run seeded with
    ``torch.manual_seed(s)`` is reproducible, and runs with different seeds draw differently."""
    return int(torch.randint(2**62, (1,)).item()) if seed is None else seed


def shared_seed(seed: int, device: torch.device) -> int:
    """Rank 0's ``seed`` on every rank of an initialised process group (of more than one rank);
    ``seed`` itself otherwise. One broadcast, at construction only."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return seed
    on = torch.device("cpu")
    if dist.get_backend() == "nccl":
        on = device if device.type == "cuda" else torch.device("cuda", torch.cuda.current_device())
    # Seeds are below 2⁶⁴; an int64 carries them through their two's complement.
    value = torch.tensor([seed - SEED_LIMIT if seed >= 2**63 else seed], device=on)
    dist.broadcast(value, src=0)
    return int(value.item()) % SEED_LIMIT


class DeviceGenerators:
    """One ``torch.Generator`` per device, made on first use in order of appearance (the n-th
    seeded with seed + n), so that draws happen where the tensors are; ``states`` and ``load``
    carry them through a checkpoint (keys: ``str(device)``)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._by_device: dict[str, torch.Generator] = {}

    def on(self, device: torch.device) -> torch.Generator:
        """The generator on ``device`` (made and seeded on first use)."""
        key = str(device)
        generator = self._by_device.get(key)
        if generator is None:
            seed = (self.seed + len(self._by_device)) % SEED_LIMIT
            generator = torch.Generator(device=device).manual_seed(seed)
            self._by_device[key] = generator
        return generator

    def states(self) -> dict[str, Tensor]:
        """Every generator's state, by device."""
        return {key: g.get_state() for key, g in self._by_device.items()}

    def load(self, seed: int, states: Mapping[str, Tensor]) -> None:
        """A checkpoint's seed and states: generators made later follow the loaded seed."""
        self.seed = seed
        for key, state in states.items():
            self.on(torch.device(key)).set_state(state.to(device="cpu", dtype=torch.uint8))
