"""NK-Sapiens: semi-supervised fine-tuning on labelled and unlabelled images.

kinematics   the kinematic plausibility score (KPS) and its reference statistics
teachers     teacher A (EMA) / teacher B (prior-refined student), view alignment, the gate
losses       consistency, deviation from the prior, limb rigidity with depth, normal orthogonality
step         the jitted semi-supervised train step
job          ``config.job = 'semisup'`` (configs/semisup_stage{0,1,2}.py)
demo         ``config.job = 'semisup_demo'`` (configs/semisup_demo.py): the rows of the table
"""
