"""The loss curve as a PNG, when matplotlib is installed (it is a dev/notebook dependency only)."""


def smooth(values, beta=0.9):
    """Exponential moving average with bias correction (as Adam's): the trend under the step noise."""
    out, avg = [], 0.0
    for i, v in enumerate(values):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def save_loss_curve(history, path, title="training loss"):
    """Write the per-step loss and its smoothed trend to `path`; returns the path, or None without matplotlib."""
    try:
        from matplotlib.figure import Figure  # no pyplot: leaves a notebook's backend alone
    except ImportError:
        return None
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    steps = range(1, len(history.losses) + 1)
    ax.plot(steps, history.losses, color="tab:blue", alpha=0.3, lw=1, label="loss per step")
    ax.plot(steps, smooth(history.losses), color="tab:blue", lw=2, label="smoothed")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return str(path)
