"""The diffusion pose prior: an MLP DDPM on normalised skeletons and its SDS loss.

    from hyper_sapiens_jax.prior import DiffusionPrior, sds_loss
    prior = DiffusionPrior.load(workdir)                      # frozen EMA weights
    loss = sds_loss(prior, xy, visible, rng)                  # inside any jitted train step
    poses = prior.sample(rng, n)                              # (n, K, 2), normalised

Modules: normalize (mid-hip / torso frame), augment (dropout, rotation, flip), denoiser (residual
MLP), ddpm (schedules, samplers), model (DiffusionPrior), sds (the loss), checkpoint (Orbax),
metrics / report / effect (evaluation). The training job is ``jobs/prior.py``.
"""

from hyper_sapiens_jax.prior.ddpm import Schedule, make_schedule
from hyper_sapiens_jax.prior.denoiser import Denoiser, DenoiserSpec
from hyper_sapiens_jax.prior.model import DiffusionPrior, PriorSpec
from hyper_sapiens_jax.prior.normalize import Frame, NormSpec
from hyper_sapiens_jax.prior.sds import sds_grad, sds_loss, sds_weight

__all__ = [
    "Denoiser",
    "DenoiserSpec",
    "DiffusionPrior",
    "Frame",
    "NormSpec",
    "PriorSpec",
    "Schedule",
    "make_schedule",
    "sds_grad",
    "sds_loss",
    "sds_weight",
]
