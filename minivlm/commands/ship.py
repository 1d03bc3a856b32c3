"""python -m minivlm ship MODEL [--run DIR]

Copies a run of `python -m minivlm train MODEL` into the package (minivlm/pretrained/shapes-MODEL/;
`blip` also ships its retrieval heads as shapes-blip-retrieval/), measures each folder on scenes it
never saw and writes its card. See minivlm/pretrained/ship.py.
"""


def add_arguments(p):
    p.add_argument("model", choices=["blip", "clip", "llava"], help="the recipe whose run to ship")
    p.add_argument("--run", metavar="DIR", help="the run folder (default: runs/<model>)")
    p.add_argument("--seed", type=int, default=0, help="the seed the run was trained with (for the card)")


def run(args):
    from minivlm.pretrained.ship import ship
    for out in ship(args.model, args.run, seed=args.seed):
        print((out / "README.md").read_text())
    return 0
