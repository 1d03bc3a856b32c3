"""What a reader sees in a committed notebook is the lesson, so the stored outputs must not mislead:
no warnings or other stderr, no paths of the machine that ran it, every notebook on the learning
path (notebooks/README.md), and the runtime the path states within 2x of the run stored.

The stored runtime is written by `python -m minivlm notebooks` into each notebook's metadata
(`metadata.minivlm.runtime_s`); tests/test_notebooks.py checks that the outputs come from one run."""
import json
import re
from pathlib import Path

import pytest

FOLDER = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))
PATH_README = FOLDER / "README.md"

# Absolute paths of the machine that executed the notebook: temp folders, home and work folders,
# an installed package's location. A path the reader can use is relative to the repository.
MACHINE_PATH = re.compile(r"(?<![\w.])(/tmp/|/var/folders/|/private/var/|/home/|/Users/|/root/|/work/|/opt/|"
                          r"[A-Za-z]:\\\\|site-packages|dist-packages)")
# A row of the learning path's table: | [01_vit](01_vit.ipynb) | ... | 35 s | ...
ROW = re.compile(r"^\|\s*\[(?P<name>[\w-]+)\]\((?P=name)\.ipynb\)\s*\|(?P<rest>.*)$", re.M)
RUNTIME = re.compile(r"\|\s*(?:~\s*)?(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>s|min)\s*\|")


def outputs(path):
    cells = json.loads(path.read_text())["cells"]
    return [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]


def output_text(out):
    if out["output_type"] == "stream":
        return "".join(out["text"])
    if out["output_type"] == "error":
        return "\n".join([out.get("ename", ""), out.get("evalue", "")] + out.get("traceback", []))
    data = out.get("data", {})
    return "".join("".join(data[k]) for k in ("text/plain", "text/html", "text/markdown") if k in data)


def stated_runtimes():
    """{notebook name: seconds} from the learning path's table."""
    stated = {}
    for row in ROW.finditer(PATH_README.read_text()):
        m = RUNTIME.search("|" + row["rest"])
        if m:
            stated[row["name"]] = float(m["value"]) * (60 if m["unit"] == "min" else 1)
    return stated


def stored_runtime(path):
    return json.loads(path.read_text())["metadata"].get("minivlm", {}).get("runtime_s")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_stderr_stored(path):
    stderr = [output_text(o)[:200] for o in outputs(path) if o["output_type"] == "stream" and o["name"] == "stderr"]
    assert not stderr, (f"{path.name} stores stderr (a warning, a progress bar): {stderr[0]!r}; silence it in "
                        "the notebook (progress=False, fix the warning's cause) and re-run `python -m minivlm notebooks`")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_machine_paths_in_outputs(path):
    found = [m.group(0) + output_text(o)[m.end():m.end() + 60].split("\n")[0]
             for o in outputs(path) for m in [MACHINE_PATH.search(output_text(o))] if m]
    assert not found, f"{path.name} prints a path of the machine that ran it: {found[0]!r}"


def test_every_notebook_is_on_the_learning_path():
    listed = {row["name"] for row in ROW.finditer(PATH_README.read_text())}
    missing = [p.stem for p in NOTEBOOKS if p.stem not in listed]
    assert not missing, f"notebooks/README.md's table does not list {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stated_runtime_within_2x_of_the_stored_run(path):
    stated, stored = stated_runtimes().get(path.stem), stored_runtime(path)
    assert stated is not None, f"notebooks/README.md states no runtime for {path.stem} (a '| 40 s |' cell in its row)"
    assert stored is not None, (f"{path.name} has no metadata.minivlm.runtime_s: execute it with "
                                f"`python -m minivlm notebooks {path.stem}`")
    assert stored / 2 <= stated <= stored * 2, (
        f"{path.stem}: notebooks/README.md says {stated:.0f} s, the stored run took {stored:.0f} s")


def test_the_checks_catch_what_they_are_for():
    assert MACHINE_PATH.search("saved to /tmp/tmp9hc8mn3b/gallery/scene-1.png")
    assert MACHINE_PATH.search("/work/venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning")
    assert not MACHINE_PATH.search("minivlm/pretrained/shapes-llava/README.md and 1/300 steps")
    table = "| [01_vit](01_vit.ipynb) | what? | none | 35 s |\n| [x_y](x_y.ipynb) | q | 01 | ~2 min |\n"
    rows = {r["name"]: RUNTIME.search("|" + r["rest"]) for r in ROW.finditer(table)}
    assert rows["01_vit"]["value"] == "35" and rows["x_y"]["unit"] == "min"
