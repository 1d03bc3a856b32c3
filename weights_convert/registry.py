"""architectures[0] of config.json -> the family that builds the minivlm model and its key map.

Each family module in weights_convert/families registers itself here with `@register(...)`.
"""
from dataclasses import dataclass

from .errors import UnknownArchitectureError

ARCHITECTURES = {}


@dataclass
class Family:
    name: str
    build: callable      # hf config dict -> minivlm nn.Module
    keymap: callable     # hf config dict -> KeyMap


def register(*architectures):
    def wrap(family):
        for arch in architectures:
            ARCHITECTURES[arch] = family
        return family
    return wrap


def family_for(config, folder="<config>"):
    archs = config.get("architectures") or []
    if not archs:
        raise UnknownArchitectureError(f"config.json in {folder} has no 'architectures' entry; "
                                       f"supported: {', '.join(sorted(ARCHITECTURES))}")
    arch = archs[0]
    if arch not in ARCHITECTURES:
        raise UnknownArchitectureError(f"architecture {arch!r} (config.json in {folder}) is not supported; "
                                       f"supported: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[arch]
