r"""Fault injection: SIGKILL a fine-tuning run at seeded random points, resume it each time with the
same command, and check that it always resumes from the last *complete* checkpoint and ends
bit-identical (parameters, EMA, optimizer state, metrics) to an uninterrupted run.

  python tests/scripts/kill_resume.py TESTBED_ROOT WORKDIR [--kills 12] [--seed 0] [--steps 40]

Kill points, chosen by ``--seed``: half of them when step k's training-log row appears (k uniform
between the last complete checkpoint and the end), half the moment an Orbax temporary checkpoint
directory appears (inside an async checkpoint write). Prints one line per kill and a summary
``kills=K exact_resumes=R identical=0|1``; exits 0 when every start resumed from the last complete
checkpoint and the end is identical.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from hyper_sapiens_jax.testbed.writer import Paths
from tests.helpers import subprocess_env
from tests.helpers.train import stage_command

RESUMED = re.compile(r"resumed from \S+ at step (\d+)")


def complete_steps(workdir: Path) -> list[int]:
    """The finished checkpoints: Orbax renames a step's temporary directory into place when it is done."""
    d = workdir / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def temporary(workdir: Path) -> set[str]:
    """Orbax's temporary checkpoint directories (a save in progress; each name is unique)."""
    d = workdir / "checkpoints"
    return {p.name for p in d.iterdir() if "tmp" in p.name} if d.is_dir() else set()


def logged_steps(workdir: Path, skip: int) -> list[int]:
    """The steps of the training-log rows after the first ``skip`` lines (this process's rows)."""
    f = workdir / "train_log.jsonl"
    lines = f.read_text().splitlines()[skip:] if f.is_file() else []
    return [json.loads(line)["step"] for line in lines if line.endswith("}")]


def line_count(workdir: Path) -> int:
    f = workdir / "train_log.jsonl"
    return f.read_text().count("\n") if f.is_file() else 0


def final_arrays(workdir: Path) -> dict:
    import orbax.checkpoint as ocp
    from flax import traverse_util

    step = max(complete_steps(workdir))
    items = [k for k in ("params", "frozen", "opt_state", "ema") if (workdir / "checkpoints" / str(step) / k).exists()]
    mngr = ocp.CheckpointManager(workdir / "checkpoints", options=ocp.CheckpointManagerOptions(read_only=True))
    out = mngr.restore(step, args=ocp.args.Composite(**{k: ocp.args.StandardRestore() for k in items}))
    mngr.close()
    return {(k, *p): np.asarray(v) for k in items for p, v in traverse_util.flatten_dict(dict(out[k])).items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("testbed", type=Path)
    p.add_argument("workdir", type=Path)
    p.add_argument("--kills", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=40, help="run length (>= 3 x --kills leaves room for every kill)")
    args = p.parse_args(argv)
    paths = Paths.under(args.testbed, 2)
    settings = dict(num_steps=args.steps, **{"checkpoint.every": 2, "checkpoint.keep": 2, "eval.every": 8})
    env = subprocess_env()
    straight, killed = args.workdir / "straight", args.workdir / "killed"
    r = subprocess.run(stage_command(paths, straight, **settings), env=env, capture_output=True, text=True)
    if r.returncode:
        print(r.stderr[-3000:])
        return 2
    rng = np.random.default_rng(args.seed)
    expected, kills, exact = None, 0, 0  # expected: the step the next start must resume from
    for i in range(args.kills + 1):
        last = i == args.kills
        # A step-row kill point a little past the last complete checkpoint (where the next start
        # resumes), spread so that the run has room for every remaining kill.
        done = expected or 0
        span = max(1, (args.steps - done - 1) // (args.kills - i + 1))
        in_write, at_step = i % 2 == 1, done + int(rng.integers(1, span + 1))
        stale, skip = temporary(killed), line_count(killed)
        cmd = stage_command(paths, killed, **settings)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 600
        while not last and proc.poll() is None and time.time() < deadline:
            hit = (temporary(killed) - stale) if in_write else any(s >= at_step for s in logged_steps(killed, skip))
            if hit:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        out = proc.communicate(timeout=600)[0]
        resumed = RESUMED.search(out)
        got = int(resumed.group(1)) if resumed else 0
        if expected is not None:
            ok = got == expected
            exact += ok
            print(f"  next start resumed from step {got} (last complete: {expected}) {'ok' if ok else 'WRONG'}")
        if last:
            if proc.returncode:
                print(out[-3000:])
                return 2
            break
        if proc.returncode != -signal.SIGKILL:
            print(f"kill {i + 1}: the run ended (returncode {proc.returncode}) before its kill point")
            print(out[-3000:])
            return 2
        kills += 1
        expected = max(complete_steps(killed), default=0)
        where = "inside a checkpoint write" if in_write else f"after step {at_step}'s log row"
        print(f"kill {kills}: {where}; complete checkpoints {complete_steps(killed)}", flush=True)
    a, b = final_arrays(straight), final_arrays(killed)
    identical = set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    last = lambda w: json.loads((w / "metrics.jsonl").read_text().splitlines()[-1])
    identical = identical and last(straight)["pck@0.05"] == last(killed)["pck@0.05"]
    print(f"kills={kills} exact_resumes={exact} identical={int(identical)}")
    return 0 if exact == kills and identical else 1


if __name__ == "__main__":
    sys.exit(main())
