"""hyper-sapiens-jax: Sapiens (pose / depth / normal) in JAX + Flax NNX, fine-tuned for infants.

Subpackages, one job each:
  models/     the Sapiens ViT backbone, its three heads and the multi-head model.
  data/       keypoint definitions, dataset readers, transforms, the synthetic infant testbed.
  inference   load a converted checkpoint and run the model (``load_predictor``).
The PyTorch <-> Flax weight conversion lives in the top-level ``convert_weights`` package.
"""

__version__ = "0.1.0"
