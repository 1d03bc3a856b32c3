"""Every committed notebook carries the outputs of one top-to-bottom run, pictures included, so it
reads on GitHub without running. (That the code still runs is nbmake's job: `pytest --nbmake`
executes each notebook afresh, so stored outputs can never hide a broken one.)

Re-execute them all in place with `python -m minivlm notebooks`."""
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# A call that draws: plt.subplots / plt.figure / plt.imshow ..., ax.imshow / ax.plot / ax.bar ...,
# and the package's own figure makers.
DRAWS = re.compile(r"\bplt\.(subplots|subplot|figure|imshow|plot|bar|barh|hist|scatter|matshow|pcolormesh)\(|"
                   r"\.(imshow|plot|bar|barh|hist|scatter|matshow|pcolormesh)\(|\bplot_stages\(")


def code_cells(path):
    cells = json.loads(path.read_text())["cells"]
    return [c for c in cells if c["cell_type"] == "code" and "".join(c["source"]).strip()]


def top_level_code(source):
    """The cell's source less the bodies of the functions it defines (a definition draws nothing)."""
    kept, in_def = [], False
    for line in source.splitlines():
        if re.match(r"(async\s+)?def |class ", line):
            in_def = True
            continue
        if in_def and (not line.strip() or line[0] in " \t)"):
            continue
        in_def = False
        kept.append(line)
    return "\n".join(kept)


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 7


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_with_the_outputs_of_one_run(path):
    cells = code_cells(path)
    counts = [c.get("execution_count") for c in cells]
    assert counts == list(range(1, len(cells) + 1)), (
        f"{path.name}: execution counts {counts}, expected 1..{len(cells)} (one top-to-bottom run); "
        "run `python -m minivlm notebooks` and commit the result")
    assert any(c.get("outputs") for c in cells), f"{path.name} has no outputs"
    errors = [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, f"{path.name} stores an error: {errors[0].get('ename')}: {errors[0].get('evalue')}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_cell_that_draws_shows_its_figure(path):
    missing = []
    for cell in code_cells(path):
        source = "".join(cell["source"])
        if DRAWS.search(top_level_code(source)):
            images = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
            if not images:
                missing.append(f"cell {cell.get('execution_count')}: {source.splitlines()[0][:60]!r}")
    assert not missing, f"{path.name}: cells that draw but store no image: {missing}"


def test_top_level_code_drops_definitions_only():
    source = "def show(x):\n    plt.imshow(x)\n\nshow(1)\nfig, ax = plt.subplots()\n"
    assert top_level_code(source) == "show(1)\nfig, ax = plt.subplots()"
    assert not DRAWS.search(top_level_code("def show(x):\n    plt.imshow(x)\n"))


def test_the_notebooks_command_strips_run_to_run_noise_only():
    import nbformat
    from minivlm.commands.notebooks import clean
    cell = nbformat.v4.new_code_cell("train()", execution_count=1, metadata={"execution": {"iopub.status.idle": "t"}})
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text=(
            "/x/tqdm/auto.py:21: TqdmWarning: IProgress not found. Please update jupyter and ipywidgets.\n"
            "  from .autonotebook import tqdm as notebook_tqdm\n")),
        nbformat.v4.new_output("stream", name="stderr",
                               text="clip [##--] 30/300 14.4 it/s 0:02<0:18 loss 1.741 lr 0.002983\n"),
        nbformat.v4.new_output("stream", name="stdout", text="accuracy 0.93 at 14.4 it/s 0:02<0:18 \n")]
    nb = nbformat.v4.new_notebook(cells=[cell], metadata={"language_info": {"name": "python", "version": "3.11.7"}})
    clean(nb)
    assert "execution" not in cell.metadata and nb.metadata.language_info == {"name": "python"}
    assert [o.text for o in cell.outputs] == ["clip [##--] 30/300 loss 1.741 lr 0.002983\n",
                                              "accuracy 0.93 at 14.4 it/s 0:02<0:18 \n"]  # stdout is content
    assert cell.execution_count == 1


def test_the_notebooks_command_names_what_exists(capsys):
    import argparse
    from minivlm.commands import notebooks
    parser = argparse.ArgumentParser()
    notebooks.add_arguments(parser)
    from minivlm.errors import UsageError
    with pytest.raises(UsageError) as e:
        notebooks.run(parser.parse_args(["no_such_notebook"]))
    out = str(e.value)
    assert "no notebook" in out and "no_such_notebook.ipynb" in out and "01_vit" in out
