"""The card (README.md) and evaluation.json of a trained run folder: what THIS run was and measured.

A run that starts from another model (train llava --data ... --from DIR) must not carry that model's
card or figures: they would describe weights the folder no longer holds. So the run writes its own:

    write_card(out, title="LLaVA fine-tuned on conversations.json", about="...",
               command="python -m minivlm train llava --data ...", figures={"loss before": 2.1, ...},
               notes=["measured on 32 training records: there is no held-out split"])

evaluation.json holds the same figures as data (with the command and the notes).
"""
import json
from pathlib import Path

# The files of a Hugging Face folder that describe a model rather than make it: a run copies the
# tokenizer and processor files of the model it starts from, never these.
DESCRIPTIONS = ("README.md", "evaluation.json", "metrics.json", "history.json", "loss.png", "bad_records.json",
                "table.md", "log.jsonl")


def _value(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_card(out, title: str, about: str, command: str, figures: dict, notes=(), extra: dict | None = None) -> Path:
    """Write out/README.md and out/evaluation.json; returns the card's path."""
    out = Path(out)
    rows = "\n".join(f"| {name} | {_value(value)} |" for name, value in figures.items())
    lines = [f"# {title}", "", about, "", "Trained with:", "", f"    {command}", "",
             "## Figures measured on this run", "", "| figure | value |", "|---|---|", rows, ""]
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    (out / "README.md").write_text("\n".join(lines))
    evaluation = dict(command=command, figures=figures, notes=list(notes), **(extra or {}))
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    return out / "README.md"
