"""A compact replay buffer that stores whole episodes.

A transition's next state is the following transition's state, so an episode of T steps stores T+1 states,
not 2T. States are stored as whatever compact components the task chooses (for registration: the pair index
and the accumulated field in half precision), and the task rebuilds observations from them. Episodes whose
components differ in shape (e.g. registration episodes on two grids) may share the buffer: a batch draws from one
shape at a time, that shape with probability proportional to its number of transitions.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["ReplayBatch", "EpisodeReplayBuffer"]


class ReplayBatch(NamedTuple):
    """A batch of transitions ``(s_t, p_t, r_t, s_{t+1}, d_t)``; states are dicts of task components."""

    state: dict[str, torch.Tensor]
    next_state: dict[str, torch.Tensor]
    plan: torch.Tensor  # (B, plan_dim)
    reward: torch.Tensor  # (B,)
    done: torch.Tensor  # (B,) 1.0 where s_{t+1} is terminal (not a time-limit truncation)


class EpisodeReplayBuffer:
    """Ring buffer of episodes.

    Args:
        capacity: number of episodes kept; the oldest are dropped first.
        storage_dtype: floating state components are stored in this dtype (float16 halves the memory).
    """

    def __init__(self, capacity: int, storage_dtype: torch.dtype = torch.float16) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.storage_dtype = storage_dtype
        self._episodes: list[dict] = []
        self._next = 0

    def add(
        self,
        states: dict[str, torch.Tensor],
        plans: torch.Tensor,
        rewards: torch.Tensor,
        dones: torch.Tensor,
    ) -> None:
        """Add a batch of B episodes of T steps.

        Args:
            states: component name -> (T+1, B, ...) tensor.
            plans: (T, B, plan_dim).
            rewards: (T, B).
            dones: (T, B).
        """
        steps, batch = rewards.shape
        for name, value in states.items():
            if value.shape[:2] != (steps + 1, batch):
                raise ValueError(
                    f"state component {name!r} must start with ({steps + 1}, {batch}), got {tuple(value.shape)}"
                )
        if plans.shape[:2] != (steps, batch) or dones.shape != (steps, batch):
            raise ValueError(
                f"plans/dones must start with ({steps}, {batch}), got {tuple(plans.shape)}, {tuple(dones.shape)}"
            )
        for b in range(batch):
            episode = {
                "states": {k: self._store(v[:, b]) for k, v in states.items()},
                "plans": plans[:, b].detach().float().cpu().clone(),
                "rewards": rewards[:, b].detach().float().cpu().clone(),
                "dones": dones[:, b].detach().float().cpu().clone(),
            }
            if len(self._episodes) < self.capacity:
                self._episodes.append(episode)
            else:
                self._episodes[self._next] = episode
            self._next = (self._next + 1) % self.capacity

    def state_dict(self) -> dict:
        """The stored episodes and the ring position (for an exact resume)."""
        return {"capacity": self.capacity, "episodes": self._episodes, "next": self._next}

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"a replay buffer of capacity {state['capacity']} does not fit one of {self.capacity}")
        self._episodes, self._next = list(state["episodes"]), int(state["next"])

    def _store(self, value: torch.Tensor) -> torch.Tensor:
        value = value.detach().cpu()
        return value.to(self.storage_dtype).clone() if value.is_floating_point() else value.clone()

    def __len__(self) -> int:
        return sum(len(e["rewards"]) for e in self._episodes)

    @property
    def nbytes(self) -> int:
        """Bytes held by stored tensors."""
        total = 0
        for e in self._episodes:
            tensors = list(e["states"].values()) + [e["plans"], e["rewards"], e["dones"]]
            total += sum(t.numel() * t.element_size() for t in tensors)
        return total

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> ReplayBatch:
        """Sample transitions uniformly; floating components come back as float32 on ``device``."""
        if not self._episodes:
            raise RuntimeError("cannot sample from an empty replay buffer")
        lengths = torch.tensor([len(e["rewards"]) for e in self._episodes], dtype=torch.float)
        shapes = [_shapes(e) for e in self._episodes]
        if len(set(shapes)) > 1:  # one shape per batch, drawn by its share of the transitions
            chosen = shapes[int(torch.multinomial(lengths, 1, generator=generator))]
            lengths = lengths * torch.tensor([s == chosen for s in shapes], dtype=torch.float)
        ep_idx = torch.multinomial(lengths, batch_size, replacement=True, generator=generator)
        t_idx = (torch.rand(batch_size, generator=generator) * lengths[ep_idx]).long()
        eps = [self._episodes[i] for i in ep_idx.tolist()]
        ts = t_idx.tolist()

        def gather(offset: int) -> dict[str, torch.Tensor]:
            keys = eps[0]["states"].keys()
            out = {}
            for k in keys:
                v = torch.stack([e["states"][k][t + offset] for e, t in zip(eps, ts)])
                out[k] = (v.float() if v.is_floating_point() else v).to(device)
            return out

        def pick(name: str) -> torch.Tensor:
            return torch.stack([e[name][t] for e, t in zip(eps, ts)]).to(device)

        return ReplayBatch(gather(0), gather(1), pick("plans"), pick("rewards"), pick("dones"))


def _shapes(episode: dict) -> tuple:
    """The shapes of an episode's state components (a replayed batch stacks states of one shape)."""
    return tuple((k, tuple(v.shape[1:])) for k, v in episode["states"].items())
