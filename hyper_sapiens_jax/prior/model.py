"""``DiffusionPrior``: the trained, frozen pose prior as one pytree (EMA params + static spec).

    prior = DiffusionPrior.load(workdir)              # prior_config.json + the latest EMA params
    z = prior.normalize(xy, visible)                   # (N, K, 2) pixels -> normalised
    z, frame = prior.normalize(xy, visible, return_frame=True); xy = prior.denormalize(z, frame)
    poses = prior.sample(rng, n)                       # (n, K, 2) normalised, DDIM by default
    eps = prior.eps(x_t, visible, t)                   # the denoiser, ε̂ (N, K, 2)

The object is a registered pytree whose only leaves are the parameters, so it can be closed over
(parameters become constants) or passed as an argument of a jitted / sharded train step (then
they are ordinary replicated inputs). The graph definition and the spec are static.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import jax
from flax import nnx

from hyper_sapiens_jax.prior import checkpoint, ddpm
from hyper_sapiens_jax.prior import normalize as norm
from hyper_sapiens_jax.prior.denoiser import Denoiser, DenoiserSpec

CONFIG_FILE = "prior_config.json"
CHECKPOINT_DIR = "checkpoints"


@dataclasses.dataclass(frozen=True)
class PriorSpec:
    """Everything but the weights: model dims, normalisation constants, noise schedule."""

    denoiser: DenoiserSpec = dataclasses.field(default_factory=DenoiserSpec)
    norm: norm.NormSpec = dataclasses.field(default_factory=norm.NormSpec)
    schedule: str = "linear"
    num_steps: int = 1000
    x0_clip: float = 0.0  # samplers clip x̂0's joint radius to this (0: off); from the data

    def to_json(self) -> dict[str, Any]:
        return {
            "denoiser": self.denoiser.to_json(),
            "norm": self.norm.to_json(),
            "schedule": self.schedule,
            "num_steps": self.num_steps,
            "x0_clip": self.x0_clip,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PriorSpec:
        return cls(
            DenoiserSpec(**d["denoiser"]),
            norm.NormSpec(**d["norm"]),
            d["schedule"],
            int(d["num_steps"]),
            float(d.get("x0_clip", 0.0)),
        )

    def make_schedule(self) -> ddpm.Schedule:
        return ddpm.make_schedule(self.schedule, self.num_steps)


def init_params(spec: PriorSpec, seed: int = 0) -> tuple[nnx.GraphDef, nnx.State]:
    """A fresh denoiser, split into its (static) graph definition and its parameter state."""
    return nnx.split(Denoiser(spec.denoiser, rngs=nnx.Rngs(seed)))


def apply_denoiser(graphdef: nnx.GraphDef, params: nnx.State, x_t, visible, t) -> jax.Array:
    """ε̂ (N, K, 2) from split state: merge inside the trace (cheap) instead of nnx.jit."""
    return nnx.merge(graphdef, params)(x_t, visible, t)


@jax.tree_util.register_pytree_node_class
class DiffusionPrior:
    """A frozen diffusion pose prior (see the module docstring)."""

    def __init__(self, graphdef: nnx.GraphDef, params: nnx.State, spec: PriorSpec):
        self.graphdef, self.params, self.spec = graphdef, params, spec

    # -- pytree: the parameters are the leaves, the rest is static --------------------------------
    def tree_flatten(self):
        return (self.params,), (self.graphdef, self.spec)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(aux[0], children[0], aux[1])

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def create(cls, spec: PriorSpec, seed: int = 0) -> DiffusionPrior:
        """An untrained prior (tests, baselines)."""
        return cls(*init_params(spec, seed), spec)

    @classmethod
    def load(cls, workdir: str | Path, step: int | None = None) -> DiffusionPrior:
        """The EMA weights of the latest (or the given) checkpoint of a prior training run."""
        workdir = Path(workdir)
        spec = read_spec(workdir)
        graphdef, params = init_params(spec)
        ema = checkpoint.restore_ema(workdir / CHECKPOINT_DIR, params, step)
        return cls(graphdef, ema, spec)

    @property
    def num_keypoints(self) -> int:
        return self.spec.denoiser.num_keypoints

    @property
    def schedule(self) -> ddpm.Schedule:
        return self.spec.make_schedule()

    # -- the pieces stage 2/3 use -------------------------------------------------------------------
    def eps(self, x_t: jax.Array, visible: jax.Array, t: jax.Array, params: nnx.State | None = None):
        """ε̂ (N, K, 2) for x_t (N, K, 2), visible (N, K), t (N,) int; ``params`` overrides ours."""
        return apply_denoiser(self.graphdef, self.params if params is None else params, x_t, visible, t)

    def normalize(self, xy: jax.Array, visible: jax.Array, return_frame: bool = False):
        """xy (N, K, 2), visible (N, K) -> z (N, K, 2) [, Frame]; differentiable in xy."""
        z, frame = norm.normalize(xy, visible, self.spec.norm)
        return (z, frame) if return_frame else z

    def denormalize(self, z: jax.Array, frame: norm.Frame) -> jax.Array:
        """The inverse of ``normalize(..., return_frame=True)``: z (N, K, 2) -> xy (N, K, 2)."""
        return norm.denormalize(z, frame)

    def sample(
        self,
        rng: jax.Array,
        n: int,
        method: str = "ddim",
        steps: int = 50,
        eta: float = 0.0,
        visible: jax.Array | None = None,
    ) -> jax.Array:
        """n poses (n, K, 2) in normalised coordinates; 'ddim' (``steps``, ``eta``) or 'ancestral' (T)."""
        return _sample(self, rng, visible, n=n, method=method, steps=steps, eta=eta)


@functools.partial(jax.jit, static_argnames=("n", "method", "steps", "eta"))
def _sample(prior: DiffusionPrior, rng, visible, *, n: int, method: str, steps: int, eta: float):
    shape = (n, prior.num_keypoints, 2)
    if method == "ancestral":
        return ddpm.ancestral_sample(prior.eps, prior.schedule, rng, shape, visible, prior.spec.x0_clip)
    if method == "ddim":
        return ddpm.ddim_sample(prior.eps, prior.schedule, rng, shape, steps, eta, visible, prior.spec.x0_clip)
    raise ValueError(f"sampling method {method!r} is not 'ddim' or 'ancestral'")


def write_spec(workdir: str | Path, spec: PriorSpec, extra: dict[str, Any] | None = None) -> None:
    """Write ``prior_config.json`` (the spec plus any run information in ``extra``)."""
    text = json.dumps(spec.to_json() | (extra or {}), indent=2)
    Path(workdir, CONFIG_FILE).write_text(text + "\n")


def read_spec(workdir: str | Path) -> PriorSpec:
    path = Path(workdir, CONFIG_FILE)
    try:
        return PriorSpec.from_json(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a prior config ({e})") from e
