"""The DDPG agent of AMC (He et al., ECCV 2018; Lillicrap et al. 2016): one continuous action per state.

Actor ``mu(s) in [0, 1]`` and critic ``Q(s, a)`` are small MLPs (two hidden layers of 300 units as in AMC),
each with a target copy that follows it softly (``tau``). Transitions ``(s, a, r, s', done)`` go to a bounded
replay buffer; an update samples a batch, fits the critic to ``y = r - b + discount * (1 - done) * Q'(s',
mu'(s'))`` (AMC: ``b`` the moving average of the episode rewards, ``discount = 1``), then moves the actor
up ``Q(s, mu(s))``. Exploration is AMC's: ``a ~ N(mu(s), sigma^2)`` truncated to [0, 1], ``sigma`` decaying
over episodes (:meth:`DDPG.explore`). Every random draw uses the agent's generator (reproducible by seed).
"""

from __future__ import annotations

import copy
from collections import deque

import torch
from torch import nn

Transition = tuple[torch.Tensor, float, float, torch.Tensor, bool]
"""``(state [D], action, reward, next state [D], done)``."""


def _mlp(d_in: int, hidden: int, out: nn.Module | None) -> nn.Sequential:
    layers = [nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)]
    return nn.Sequential(*layers, *([out] if out is not None else []))


def truncated_normal(mu: float, sigma: float, generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    """One draw of ``N(mu, sigma^2)`` truncated to ``[low, high]`` (inverse CDF, exact)."""
    if sigma <= 0:
        return min(max(mu, low), high)
    a, b = torch.special.ndtr(torch.tensor([(low - mu) / sigma, (high - mu) / sigma], dtype=torch.float64))
    u = a + (b - a) * torch.rand((), generator=generator, dtype=torch.float64)
    z = torch.special.ndtri(u.clamp(1e-12, 1 - 1e-12))
    return float(min(max(mu + sigma * float(z), low), high))


class DDPG:
    """Actor-critic agent over states ``[state_dim]`` and actions in [0, 1].

    Args:
        state_dim: features of a state.
        hidden: units of both hidden layers of actor and critic.
        lr_actor / lr_critic: Adam learning rates (AMC: 1e-4 / 1e-3).
        tau: soft target update ``theta' <- tau * theta + (1 - tau) * theta'``.
        discount: of the target's next-state value (AMC: 1, every transition carries the episode's reward).
        batch_size / capacity: update batch and replay buffer size (transitions).
        baseline_alpha: moving-average rate of the reward baseline ``b``.
        seed: initialises the networks and the agent's generator.
    """

    def __init__(self, state_dim: int, hidden: int = 300, lr_actor: float = 1e-4, lr_critic: float = 1e-3,
                 tau: float = 0.01, discount: float = 1.0, batch_size: int = 64, capacity: int = 2000,
                 baseline_alpha: float = 0.5, seed: int = 0) -> None:  # fmt: skip
        self.generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.actor = _mlp(state_dim, hidden, nn.Sigmoid())
            self.critic = _mlp(state_dim + 1, hidden, None)
        self.actor_target, self.critic_target = copy.deepcopy(self.actor), copy.deepcopy(self.critic)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr_actor)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr_critic)
        self.tau, self.discount, self.batch_size, self.alpha = tau, discount, batch_size, baseline_alpha
        self.buffer: deque[Transition] = deque(maxlen=capacity)
        self.baseline: float | None = None

    def act(self, state: torch.Tensor) -> float:
        """``mu(state)`` in [0, 1], no noise."""
        with torch.no_grad():
            return float(self.actor(state.float()[None])[0, 0])

    def explore(self, state: torch.Tensor, sigma: float) -> float:
        """``mu(state)`` plus truncated-normal noise of scale ``sigma``, in [0, 1]."""
        return truncated_normal(self.act(state), sigma, self.generator)

    def random_action(self) -> float:
        """Uniform in [0, 1] (warm-up episodes)."""
        return float(torch.rand((), generator=self.generator, dtype=torch.float64))

    def observe(self, transition: Transition) -> None:
        """Store one transition (the oldest leaves a full buffer)."""
        self.buffer.append(transition)

    def update_baseline(self, reward: float) -> float:
        """Fold an episode's reward into the moving-average baseline ``b``; returns ``b``."""
        self.baseline = reward if self.baseline is None else self.baseline + self.alpha * (reward - self.baseline)
        return self.baseline

    def sample(self) -> tuple[torch.Tensor, ...]:
        """A batch ``(s [B, D], a [B, 1], r [B, 1], s' [B, D], done [B, 1])`` drawn from the buffer."""
        idx = torch.randint(len(self.buffer), (min(self.batch_size, len(self.buffer)),), generator=self.generator)
        rows = [self.buffer[int(i)] for i in idx]
        s, a, r, s1, d = zip(*rows)
        a, r, d = (torch.tensor(v, dtype=torch.float32)[:, None] for v in (a, r, d))
        return torch.stack(s).float(), a, r, torch.stack(s1).float(), d

    def critic_loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Mean squared TD error of the critic on ``batch`` (targets from the target networks)."""
        s, a, r, s1, d = batch
        with torch.no_grad():
            q_next = self.critic_target(torch.cat([s1, self.actor_target(s1)], 1))
            y = r - (self.baseline or 0.0) + self.discount * (1 - d) * q_next
        return ((self.critic(torch.cat([s, a], 1)) - y) ** 2).mean()

    def update(self, batch: tuple[torch.Tensor, ...] | None = None) -> dict[str, float]:
        """One critic step, one actor step and the soft target updates (``batch`` default: :meth:`sample`)."""
        batch = batch if batch is not None else self.sample()
        loss = self.critic_loss(batch)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        s = batch[0]
        policy = -self.critic(torch.cat([s, self.actor(s)], 1)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        policy.backward()
        self.actor_opt.step()
        with torch.no_grad():
            for net, target in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
                for p, tp in zip(net.parameters(), target.parameters()):
                    tp.mul_(1 - self.tau).add_(self.tau * p)
        return {"critic_loss": float(loss.detach()), "actor_loss": float(policy.detach())}
