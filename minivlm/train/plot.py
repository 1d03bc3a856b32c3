"""The loss curve as a PNG, when matplotlib is installed (it is a dev/notebook dependency only)."""


def smooth(values, beta=0.9):
    """Exponential moving average with bias correction (as Adam's): the trend under the step noise."""
    out, avg = [], 0.0
    for i, v in enumerate(values):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def save_loss_curve(history, path, title="training loss", ylabel="loss"):
    """Write the per-step loss and its smoothed trend to `path`; returns the path, or None without
    matplotlib. `history` is one run's History, or {stage name: History} for stages run one after
    the other: each stage then gets its own colour on one step axis, a dotted line where it starts."""
    try:
        from matplotlib.figure import Figure  # no pyplot: leaves a notebook's backend alone
    except ImportError:
        return None
    stages = history if isinstance(history, dict) else {"loss per step": history}
    fig = Figure(figsize=(7 if len(stages) > 1 else 6, 3.5))
    ax = fig.subplots()
    offset = 0
    for (name, h), colour in zip(stages.items(), ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        steps = range(offset + 1, offset + len(h.losses) + 1)
        one = len(stages) == 1
        ax.plot(steps, h.losses, color=colour, alpha=0.3, lw=1, label=name if one else None)
        ax.plot(steps, smooth(h.losses), color=colour, lw=2, label="smoothed" if one else name)
        if offset:
            ax.axvline(offset + 0.5, color="grey", ls=":", lw=1)
        offset += len(h.losses)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return str(path)
