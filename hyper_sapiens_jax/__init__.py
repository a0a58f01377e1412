"""hyper-sapiens-jax: Sapiens (pose / depth / normal) in JAX + Flax NNX, fine-tuned for infants.

Run everything through ``python -m hyper_sapiens_jax.main --config CONFIG --workdir W``. The folders,
from the bottom up (each imports only the ones below it; docs/design.md §9):
  models/      the Sapiens ViT, its three heads, the multi-head model, MAE, presets (``arch.py``)
  data/        keypoints, dataset readers, the UDP codec, transforms, the Grain pipeline
  testbed/     the synthetic data: infant bodies, renderer, the infant testbed, the human corpus
  losses/      pose and geometry losses;  evaluation/  PCK, OKS AP, G-Error, the flip test
  training/    the train step, optimizer, objective, checkpoints and the run engine (``Trainer``)
  prior/       the diffusion pose prior and its SDS loss
  semisup/     NK-Sapiens: the semi-supervised step, teachers and losses
  jobs/        what ``main`` runs: finetune, pretrain, prior, foundation, demo, semisup, semisup_demo,
               study, sweep (and ``inputs``: config.data -> paths and sources)
The PyTorch <-> Flax weight conversion lives in the top-level ``convert_weights`` package.
"""

__version__ = "0.1.0"
