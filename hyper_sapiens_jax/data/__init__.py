"""Data: keypoint definitions, dataset readers, transforms and the synthetic infant testbed."""
