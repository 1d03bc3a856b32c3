"""The shipped tiny models (minivlm/pretrained/): they load strictly, transformers loads the same
folders and gives the same numbers, they still answer as well as when shipped on scenes they never
saw, and the package carries them."""
import fnmatch
import tomllib
from pathlib import Path

import pytest

import minivlm.pretrained as pretrained
from minivlm.parity import assert_parity
from minivlm.pretrained.cases import CASES
from minivlm.pretrained.heldout import margin, measure

NAMES = list(pretrained.RECIPES)


def test_every_recipe_is_shipped_in_float32_under_10_mb():
    assert pretrained.available() == NAMES
    total = 0
    for name in NAMES:
        folder = pretrained.path(name)
        for f in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md", "evaluation.json"):
            assert (folder / f).is_file(), f"{name} lacks {f}"
        from safetensors import safe_open
        with safe_open(folder / "model.safetensors", "pt") as weights:
            dtypes = {weights.get_slice(k).get_dtype() for k in weights.keys()}
        assert dtypes == {"F32"}, (name, dtypes)
        total += sum(p.stat().st_size for p in folder.iterdir())
    assert total < 10e6, f"shipped models weigh {total / 1e6:.1f} MB"


@pytest.mark.parametrize("case", CASES)
def test_loads_strictly_and_equals_transformers(case):
    assert_parity(CASES[case]())   # fp32 budget on every field, greedy ids equal where it generates


def test_every_shipped_model_has_a_parity_case():
    assert {Path(make().folder).name for make in CASES.values()} == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_still_answers_as_recorded_on_scenes_it_never_saw(name):
    recorded = pretrained.record(name)["counts"]
    now = measure(name, pretrained.path(name))
    drops = []
    for split, metrics in recorded.items():
        for metric, r in metrics.items():
            n = now[split][metric]
            assert n["total"] == r["total"], f"{name} {split} {metric}: the evaluation set changed"
            if n["correct"] < r["correct"] - margin(r["total"]):
                drops.append(f"{split} {metric} {n['correct']}/{n['total']} (recorded {r['correct']})")
    assert not drops, f"{name} answers worse than when shipped: " + ", ".join(drops)


def test_recorded_figures_are_real_learning():
    """What the cards promise, well above chance, and the held-out split of CLIP is compositional."""
    clip = pretrained.record("shapes-clip")["counts"]
    assert clip["held_out"]["zero_shot"]["correct"] / clip["held_out"]["zero_shot"]["total"] > 0.8  # chance 1/24
    retrieval = pretrained.record("shapes-blip-retrieval")["counts"]
    for split in retrieval.values():   # chance: 1/54 and 1/18 for R@1, 1/2 for a pair
        assert split["t2i_itc"]["correct"] / split["t2i_itc"]["total"] > 0.8
        assert split["itm_pairs"]["correct"] / split["itm_pairs"]["total"] > 0.75
    llava = pretrained.record("shapes-llava")["counts"]["seen"]
    for kind in ("color", "shape", "count"):
        assert llava[kind]["correct"] / llava[kind]["total"] > 0.7, kind


def test_the_package_carries_every_shipped_file():
    """pyproject's package-data patterns match every file of every shipped folder (pip install and
    the wheel copy only what they match)."""
    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "minivlm.pretrained"]
    for name in NAMES:
        for f in pretrained.path(name).iterdir():
            rel = f"{name}/{f.name}"
            assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"{rel} is not package data"


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ValueError, match="no shipped model 'shapes-gpt'; shipped: shapes-clip"):
        pretrained.path("shapes-gpt")
