"""What a checkpoint restores: stateful components registered once (torchtitan's ``Stateful``).

Every component whose state a resume must restore registers here, under the key its state has
in the checkpoint, as *global* (the same on every rank: written once, in ``trainer.pt``) or
*per rank* (``rank_XXXXX.pt``). Saving collects every registered state, resuming hands each
component its own; a new stateful component is one ``register`` call, nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

Scope = Literal["global", "rank"]


class Stateful(Protocol):
    """Anything with ``state_dict``/``load_state_dict`` (torch modules, optimizers, schedulers,
    the loaders, the step guard, and the small adapters below)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class StateRegistry:
    """Named stateful components, collected on save and restored on resume."""

    def __init__(self) -> None:
        self._components: dict[Scope, dict[str, Stateful]] = {"global": {}, "rank": {}}

    def register(self, name: str, component: Stateful, scope: Scope = "global") -> None:
        """Add ``component`` under ``name`` (a name can be registered once per scope)."""
        if name in self._components[scope]:
            raise ValueError(f"{scope} state {name!r} is registered twice")
        self._components[scope][name] = component

    def collect(self, scope: Scope) -> dict[str, Any]:
        """``{name: component.state_dict()}`` of every component of ``scope``."""
        return {name: c.state_dict() for name, c in self._components[scope].items()}

    def restore(self, scope: Scope, state: dict[str, Any]) -> None:
        """Hand every component of ``scope`` its saved state (a missing name is an error)."""
        missing = sorted(set(self._components[scope]) - set(state))
        if missing:
            raise KeyError(f"checkpoint has no {scope} state for {', '.join(missing)}")
        for name, component in self._components[scope].items():
            component.load_state_dict(state[name])


@dataclass
class TrainProgress:
    """The loop's position: the iteration count and the best validation export so far."""

    step: int = 0
    best: dict[str, float] = field(default_factory=dict)
    """``{"val_rd_loss", "step"}`` of ``export/best.pt`` (empty before the first validation)."""

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "best": dict(self.best)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.best = int(state["step"]), dict(state.get("best", {}))


class GeneratorState:
    """A ``torch.Generator`` as a stateful component."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> dict[str, Any]:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["state"])


def with_legacy_keys(state: dict[str, Any]) -> dict[str, Any]:
    """``trainer.pt`` as written: today's entries plus the top-level ``step``, ``skipped`` and
    ``best`` of the earlier layout, so the file stays a superset of what it was."""
    progress, skipped = state["progress"], state["guard"]["skipped"]
    return {**state, "step": progress["step"], "best": progress["best"], "skipped": skipped}


def upgrade_trainer_state(state: dict[str, Any]) -> dict[str, Any]:
    """A ``trainer.pt`` of any earlier layout in today's: ``progress`` and ``guard`` entries
    (earlier files held ``step``, ``best`` and ``skipped`` at the top level)."""
    state = dict(state)
    if "progress" not in state:
        state["progress"] = {"step": state["step"], "best": state.get("best", {})}
    if "guard" not in state:
        state["guard"] = {"skipped": state.get("skipped", 0)}  # the cap was always armed then
    return state


def upgrade_rank_state(state: dict[str, Any]) -> dict[str, Any]:
    """A rank file of any earlier layout in today's (the noise generator's state was a bare
    tensor)."""
    state = dict(state)
    if isinstance(state.get("noise_generator"), torch.Tensor):
        state["noise_generator"] = {"state": state["noise_generator"]}
    return state


class RngStreams:
    """This process's Python, NumPy, torch (and CUDA) RNG streams as a stateful component."""

    def state_dict(self) -> dict[str, Any]:
        from trainer.checkpointer import rng_state

        return rng_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from trainer.checkpointer import set_rng_state

        set_rng_state(state)
