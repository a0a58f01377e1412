"""Sapiens PyTorch checkpoints <-> hyper-sapiens-jax Flax checkpoints.

  python -m convert_weights.torch_to_flax   read .pth / *_clean.pth / TorchScript .pt2 / safetensors
  python -m convert_weights.flax_to_torch   write the Sapiens PyTorch layout (.pth or .safetensors)
  python -m convert_weights.random_checkpoint   a randomly initialised Sapiens-format file (demos, tests)

``layout`` holds the key mapping (pure numpy); ``torch_io`` the only code that touches torch.
"""
