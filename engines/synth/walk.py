"""Smooth walks of the synthetic animal along wobbly loops, for the generated videos: heading
follows the direction of motion and the body bends into turns."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from posed.engines.synth.render import FPS, AnimalState


@dataclass(frozen=True)
class Loop:
    """A wobbly loop around the origin, x radius 1 and y radius ``ratio``, plus a wobble of
    0.08; it stays within +-(1.08, ratio + 0.08)."""

    omega: float  # angular speed, rad/s; its sign is the direction
    phase0: float
    wob_f: float
    wob_p: np.ndarray
    ratio: float

    def unit(self, tt: np.ndarray) -> np.ndarray:
        """2×T positions at times ``tt`` (seconds)."""
        phi = self.phase0 + self.omega * tt
        wob = 0.08 * np.stack(
            [np.sin(self.wob_f * tt + self.wob_p[0]), np.cos(self.wob_f * tt + self.wob_p[1])]
        )
        return np.stack([np.cos(phi), self.ratio * np.sin(phi)]) + wob

    def heading(self, tt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Direction of motion (unwrapped, rad) at ``tt`` and its rate of change (rad/s;
        positive turns towards the animal's right)."""
        vel = self.unit(tt + 1e-3) - self.unit(tt)
        heading = np.unwrap(np.arctan2(vel[1], vel[0]))
        return heading, np.gradient(heading) * float(FPS)


def random_loop(rng: np.random.Generator, max_period: float,
                direction: float | None = None) -> Loop:
    """A loop with a period of 3 s to ``max_period``; ``direction`` +1/-1, random when None."""
    period = rng.uniform(3.0, max_period)
    sign = rng.choice([-1.0, 1.0]) if direction is None else direction
    omega = 2.0 * np.pi / period * sign
    phase0 = rng.uniform(0.0, 2.0 * np.pi)
    wob_f = rng.uniform(2.0, 3.0) * abs(omega)
    wob_p = rng.uniform(0.0, 2.0 * np.pi, size=2)
    return Loop(omega, phase0, wob_f, wob_p, rng.uniform(0.6, 1.0))


@dataclass(frozen=True)
class Gait:
    """Body shape and the rhythm of head and tail during a walk."""

    width_ratio: float
    tail_ratio: float
    curl0: float
    tail_f: float
    head_f: float


def random_gait(rng: np.random.Generator) -> Gait:
    """A random :class:`Gait`."""
    width_ratio = rng.uniform(0.45, 0.52)
    tail_ratio = rng.uniform(0.65, 0.8)
    curl0 = rng.uniform(-0.6, 0.6)
    tail_f = rng.uniform(1.5, 3.0)
    head_f = rng.uniform(0.8, 1.6)
    return Gait(width_ratio, tail_ratio, curl0, tail_f, head_f)


def walk_states(t: np.ndarray, heading: np.ndarray, turn: np.ndarray, length: float,
                gait: Gait, n: int) -> list[AnimalState]:
    """The poses of the first ``n`` times ``t`` of a walk, centred on the origin (the caller
    places them)."""
    return [
        AnimalState(
            x=0.0,
            y=0.0,
            heading=float(heading[i]),
            length=length,
            width_ratio=gait.width_ratio,
            bend=float(np.clip(-0.25 * turn[i], -0.3, 0.3)),
            head_turn=float(
                np.clip(0.2 * turn[i], -0.4, 0.4) + 0.2 * math.sin(gait.head_f * 2 * np.pi * t[i])
            ),
            tail_curl=float(gait.curl0 + 0.5 * math.sin(gait.tail_f * 2 * np.pi * t[i])),
            tail_wave=float(0.3 * math.sin(gait.tail_f * np.pi * t[i] + 1.0)),
            tail_ratio=gait.tail_ratio,
        )
        for i in range(n)
    ]
