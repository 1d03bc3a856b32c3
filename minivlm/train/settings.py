"""A run's settings, kept beside its checkpoints, so that `--resume DIR` continues the run DIR holds.

    python -m minivlm train clip --steps 600 --seed 1 --save-every 100 --out runs/clip
    python -m minivlm train clip --resume runs/clip           # 600 steps, seed 1: read from the run

`python -m minivlm train` writes <out>/checkpoints/settings.json when a run keeps checkpoints: the
recipe and every option that shapes the run (steps, seed, batch size, accumulation, precision, data).
A resumed run takes them from there. An option the user gives again on resume must agree with it:
a different seed or batch size would continue a run that never existed (data order, schedule and
random draws all change), so it is refused by name. Only what cannot change the numbers (device,
threads, how often and how many checkpoints are kept) may differ.
"""
import json
from pathlib import Path

from . import distributed

SETTINGS = "settings.json"
# Options a resumed run may change: where and how fast it runs, and how it keeps checkpoints.
FREE_ON_RESUME = ("device", "threads", "save_every", "keep")
# Not settings of the run: how this invocation was called.
NOT_SETTINGS = ("resume", "out", "given", "command", "debug")


def path(out) -> Path:
    return Path(out) / "checkpoints" / SETTINGS


def save(out, settings: dict) -> None:
    """Write the run's settings (rank 0; the others share its folder or do not write)."""
    if not distributed.is_main():
        return
    file = path(out)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")


def load(out) -> dict | None:
    """The settings of the run in `out`, or None for a run written before they were kept."""
    file = path(out)
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except ValueError as e:
        raise ValueError(f"{file} is unreadable ({e}); delete it to resume with the options given on the "
                         f"command line instead") from None


def of(args) -> dict:
    """The settings in an argparse namespace: every option but how this invocation was called."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in NOT_SETTINGS and not k.startswith("_")}


def conflicts(saved: dict, current: dict, given) -> list:
    """[(option, saved value, given value)] for each option the user gave that contradicts the run."""
    return [(k, saved[k], current[k]) for k in sorted(given)
            if k in saved and k in current and k not in FREE_ON_RESUME and saved[k] != current[k]]


def command_line(args) -> str:
    """The command that trains this run again: the recipe and its settings (how it ran aside)."""
    parts = ["python -m minivlm train", args.model]
    for k, v in of(args).items():
        if k in ("model", "device", "threads", "save_every", "keep") or v is None:
            continue
        parts.append(f"{flag(k)} {v}")
    return " ".join(parts)


def flag(name: str) -> str:
    """An option's name on the command line (the dest "from_dir" is --from)."""
    return "--from" if name == "from_dir" else "--" + name.replace("_", "-")
