"""python -m minivlm notebooks [NAME ...] [--timeout S]

Re-executes notebooks/*.ipynb (or the ones named) in place, each top to bottom in a fresh kernel, and
stores their outputs, so the pictures and printed shapes read on GitHub without running anything.

What would change from run to run without a change in the code is left out: each cell's execution
timestamps (nbclient's cell metadata), the kernel's Python patch version, progress bars' speeds and
clocks, and tqdm's warning about a kernel without ipywidgets. Execution counts stay:
one top-to-bottom run numbers the code cells 1, 2, 3 ..., the same every time, and
tests/test_notebooks.py reads them as the proof that the stored outputs come from one such run.
Seeds are fixed in the notebooks and PYTHONHASHSEED here, so a re-run rewrites the same outputs
except timings the notebooks print themselves (training speed) and the measured runtime, which is
stored in the notebook's metadata (`metadata.minivlm.runtime_s`, seconds for the whole run in a fresh
kernel) so tests/test_notebook_hygiene.py can hold notebooks/README.md's stated runtime to it.
"""
import os
import re
import time
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def add_arguments(p):
    p.add_argument("names", nargs="*", help="notebook files or names like 06_llava (default: every one)")
    p.add_argument("--timeout", type=int, default=600, help="seconds one cell may take")


def find(names, folder=NOTEBOOKS):
    if not names:
        return sorted(folder.glob("*.ipynb"))
    found = []
    for name in names:
        path = Path(name) if Path(name).suffix == ".ipynb" else folder / f"{name}.ipynb"
        if not path.is_file():
            raise FileNotFoundError(f"no notebook {path}; there are: {', '.join(p.stem for p in sorted(folder.glob('*.ipynb')))}")
        found.append(path)
    return found


# tqdm's import-time warning in a kernel without ipywidgets: about the environment, not the notebook.
NOISE = re.compile(r".*TqdmWarning: IProgress not found.*\n(  from \.autonotebook import.*\n)?")
# The speed and clock of minivlm's progress lines (train/progress.py): "12.4 it/s 0:14<0:09 " -> "".
# The step, the loss and the metrics stay: they are the notebook's content.
SPEED = re.compile(r"\d+(\.\d+)? it/s \d+:\d\d<\d+:\d\d ")


def clean(nb):
    """Drop what differs between two runs of unchanged code, and environment warnings."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and out.name == "stderr":
                out.text = SPEED.sub("", NOISE.sub("", out.text))
        if "outputs" in cell:
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and not o.text)]
    info = nb.metadata.get("language_info", {})
    info.pop("version", None)
    nb.metadata.pop("widgets", None)
    return nb


def execute(path, timeout=600):
    """Run one notebook in place (its own folder as the working directory); returns seconds taken,
    also stored as the notebook's `metadata.minivlm.runtime_s`."""
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    start = time.time()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(Path(path).parent)}}).execute()
    seconds = time.time() - start
    nb = clean(nb)
    nb.metadata["minivlm"] = {"runtime_s": round(seconds, 1)}
    nbformat.write(nb, path)
    return seconds


def run(args):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["PYTHONHASHSEED"] = "0"    # the kernel inherits these: set orders stay the same,
    os.environ["TQDM_DISABLE"] = "1"      # and no progress bar prints its timing
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    try:
        paths = find(args.names)
    except FileNotFoundError as e:
        from minivlm.errors import UsageError
        raise UsageError(str(e)) from None
    for path in paths:
        print(f"{path.name}: {execute(path, args.timeout):.0f}s", flush=True)
    return 0
