"""The synthetic testbed: the project's stand-in for data it cannot ship.

bodies.py     3D bodies with the 25 SMIL joints: infant proportions (and, for the adult corpus,
              adults and children), postures within joint limits, forward kinematics.
renderer.py   a z-buffer renderer of those bodies: RGB, depth, normals, masks, visibility.
writer.py     the infant testbed on disk in the SyRIP / MINI-RGBD layouts
              (``python -m hyper_sapiens_jax.testbed.writer --out DIR``).
humans.py     the "in-the-wild" human corpus (the testbed's Humans-300M): adults and children,
              mostly upright, one or several per image, generated per index.
"""
