"""IntermediateFusionModel: scheduling, validation, masks, gradients, per-stream training pieces."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmfuse.batch import MultimodalBatch
from mmfuse.errors import ConfigError, MissingModalityError, ShapeError
from mmfuse.interaction import MMTM
from mmfuse.models.intermediate import (
    IntermediateFusionModel,
    normalize_fusion_points,
    per_stream_param_groups,
)
from mmfuse.models.output import ModelOutput


class TinyStaged(nn.Module):
    """A user-defined staged module (not a StagedEncoder subclass): conv stages over `dims` spatial dims."""

    def __init__(self, in_ch, channels, dims=2, out=6, log=None, name=""):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
        stages, c = [], in_ch
        for k in channels:
            stages.append(nn.Sequential(conv(c, k, 3, padding=1), nn.ReLU()))
            c = k
        self.stages = nn.ModuleList(stages)
        self.stage_channels = list(channels)
        self.output_dim = out
        self.proj = nn.Linear(c, out)
        self.log, self.name = log, name
        if log is not None:
            for i, s in enumerate(self.stages):
                s.register_forward_hook(lambda mod, inp, outp, i=i: log.append((self.name, i)))

    def finish(self, h):
        return self.proj(h.flatten(2).mean(-1))


class LoggingMMTM(MMTM):
    def __init__(self, channels, log=None, **kw):
        super().__init__(channels, **kw)
        self._log = log

    def forward(self, features, mask=None):
        self._log.append(("block", tuple(sorted(features))))
        return super().forward(features, mask)


def make_batch(B=4, mask=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = {
        "audio": torch.randn(B, 3, 12, generator=g),
        "image": torch.randn(B, 1, 8, 8, generator=g),
        "video": torch.randn(B, 1, 4, 6, 6, generator=g),
    }
    m = {k: torch.ones(B, dtype=torch.bool) for k in inputs}
    if mask:
        m.update(mask)
    inputs = {k: v * m[k].view((-1,) + (1,) * (v.dim() - 1)) for k, v in inputs.items()}
    return MultimodalBatch(inputs, m, torch.randint(0, 3, (B,), generator=g))


def encoders(log=None):
    torch.manual_seed(0)
    return {
        "audio": TinyStaged(3, [4, 6, 8], dims=1, log=log, name="audio"),
        "image": TinyStaged(1, [4, 5], dims=2, log=log, name="image"),
        "video": TinyStaged(1, [3, 4, 5, 6], dims=3, log=log, name="video"),
    }


def test_scheduling_with_different_stage_counts():
    log = []
    encs = encoders(log)
    model = IntermediateFusionModel(
        encs,
        [{"image": 0, "audio": 1}, {"audio": 2, "video": 1, "image": 1}],
        num_outputs=3,
        block=lambda channels, **kw: LoggingMMTM(channels, log, **kw),
    )
    out = model(make_batch())
    assert isinstance(out, ModelOutput) and out.logits.shape == (4, 3)
    # block 0 runs after image stage 0 and audio stages 0-1; block 1 after audio 2, video 0-1, image 1
    b0 = log.index(("block", ("audio", "image")))
    b1 = log.index(("block", ("audio", "image", "video")))
    before0 = set(log[:b0])
    assert before0 == {("image", 0), ("audio", 0), ("audio", 1)}
    assert set(log[b0 + 1 : b1]) == {("audio", 2), ("video", 0), ("video", 1), ("image", 1)}
    assert set(log[b1 + 1 :]) == {("video", 2), ("video", 3)}
    assert len(log) == 3 + 2 + 4 + 2  # every stage ran exactly once, plus two blocks


def test_block_channels_follow_stage_channels_and_negative_indices():
    model = IntermediateFusionModel(encoders(), [{"image": 0, "video": 1}, {"image": -1, "video": -1}], num_outputs=2)
    assert model.fusion_points == [{"image": 0, "video": 1}, {"image": 1, "video": 3}]
    assert model.blocks[0].channels == {"image": 4, "video": 4}
    assert model.blocks[1].channels == {"image": 5, "video": 6}
    out = model(make_batch())
    assert set(out.unimodal_logits) == {"audio", "image", "video"}
    assert torch.allclose(out.logits, sum(out.unimodal_logits.values()), atol=1e-6)
    assert out.fused.shape == (4, 18) and all(e.shape == (4, 6) for e in out.embeddings.values())


def test_no_fusion_points_is_late_fusion_of_summed_logits():
    encs = encoders()
    model = IntermediateFusionModel(encs, [], num_outputs=3)
    b = make_batch()
    out = model(b)
    for m in model.streams:
        expect = model.heads[m](encs[m].finish(_run_all(encs[m], b.inputs[m])))
        assert torch.allclose(out.unimodal_logits[m], expect, atol=1e-6)
    assert len(model.blocks) == 0


def _run_all(enc, x):
    for s in enc.stages:
        x = s(x)
    return x


def test_identity_mmtm_model_equals_late_fusion():
    b = make_batch()
    late = IntermediateFusionModel(encoders(), [], num_outputs=3)
    mm = IntermediateFusionModel(
        encoders(), [{"image": 0, "audio": 0}, {"image": 1, "audio": 2}], num_outputs=3,
        block_options={"init": "identity"},
    )
    mm.encoders.load_state_dict(late.encoders.state_dict())
    mm.heads.load_state_dict(late.heads.state_dict())
    assert torch.allclose(mm(b).logits, late(b).logits, atol=1e-6)


@pytest.mark.parametrize(
    "points,match",
    [
        ([{"image": 0}], r"fusion_points\[0\].*at least 2"),
        ([{"image": 0, "audio": 0}, {"image": 0, "audio": 1}], r"fusion_points\[1\]\['image'\].*strictly increase"),
        ([{"image": 1, "audio": 2}, {"image": 0, "audio": 1}], r"fusion_points\[1\].*does not come after"),
        ([{"image": 0, "text": 0}], r"fusion_points\[0\]: unknown stream 'text'"),
        ([{"image": 2, "audio": 0}], r"fusion_points\[0\]\['image'\] = 2: stream 'image' has 2 stages"),
        ([{"image": -3, "audio": 0}], r"fusion_points\[0\]\['image'\] = -3"),
        ([{"image": 0, "audio": 1}, {"image": "1", "audio": 2}], r"fusion_points\[1\]\['image'\]: the stage must be an int"),
        ([{"image": 0, "audio": 1}, ["image", "audio"]], r"fusion_points\[1\]: expected a dict"),
        ({"image": 0, "audio": 1}, r"must be a list"),
    ],
)
def test_fusion_point_validation(points, match):
    with pytest.raises(ConfigError, match=match):
        IntermediateFusionModel(encoders(), points, num_outputs=3)


def test_encoder_and_option_validation():
    class NoStages(nn.Module):
        output_dim = 4

    with pytest.raises(ConfigError, match="encoder 'image'.*no stages"):
        IntermediateFusionModel({"image": NoStages(), "audio": encoders()["audio"]}, [], num_outputs=2)
    bad = encoders()["image"]
    bad.stage_channels = [4]
    with pytest.raises(ConfigError, match="encoder 'image' must expose `stage_channels`"):
        IntermediateFusionModel({"image": bad}, [], num_outputs=2)
    with pytest.raises(ConfigError, match="num_outputs"):
        IntermediateFusionModel(encoders(), [], num_outputs=0)
    with pytest.raises(ConfigError, match="combine"):
        IntermediateFusionModel(encoders(), [], num_outputs=2, combine="prod")
    with pytest.raises(ConfigError, match=r"fusion_points\[0\].*preset"):
        IntermediateFusionModel(encoders(), [{"image": 0, "audio": 0}], num_outputs=2, block_options={"preset": "x"})
    with pytest.raises(ConfigError, match="unknown interaction block 'mmtn'"):
        IntermediateFusionModel(encoders(), [{"image": 0, "audio": 0}], num_outputs=2, block="mmtn")
    with pytest.raises(ConfigError, match="one nn.Module per fusion point"):
        IntermediateFusionModel(encoders(), [{"image": 0, "audio": 0}], num_outputs=2, block=[nn.Identity(), nn.Identity()])


def test_wrong_stage_channels_raise_shape_error_naming_point():
    encs = encoders()
    encs["image"].stage_channels = [7, 5]  # lies about stage 0
    model = IntermediateFusionModel(encs, [{"image": 0, "audio": 0}], num_outputs=2)
    with pytest.raises(ShapeError, match=r"fusion_points\[0\].*'image' has 4 channels"):
        model(make_batch())


def test_batch_missing_modality():
    model = IntermediateFusionModel(encoders(), [], num_outputs=2)
    b = make_batch()
    b2 = MultimodalBatch({k: v for k, v in b.inputs.items() if k != "video"},
                         {k: v for k, v in b.mask.items() if k != "video"}, b.target)
    with pytest.raises(MissingModalityError, match="'video'"):
        model(b2)


def test_gradient_flows_through_mmtm_into_both_encoders():
    torch.manual_seed(1)
    encs = encoders()
    model = IntermediateFusionModel(encs, [{"image": 0, "audio": 1}], num_outputs=3, block_options={"joint_dim": 8})
    out = model(make_batch(B=6))
    # the image head's loss alone reaches the audio encoder's early stages through the block
    out.unimodal_logits["image"].pow(2).sum().backward()
    for name, p in model.encoders["audio"].stages[:2].named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.encoders["audio"].stages[2][0].weight.grad is None  # after the point: no path from image
    for name, p in model.blocks.named_parameters():
        if "excitation.audio" in name:
            assert p.grad is None  # the audio gate is not on the image logits' path
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    model.zero_grad()
    model(make_batch(B=6)).logits.sum().backward()
    for name, p in model.named_parameters():
        if name.startswith("encoders.video") or name.startswith("heads.video") or name.startswith("encoders.audio") \
                or name.startswith("encoders.image") or name.startswith("heads"):
            assert p.grad is not None, name


def test_absent_stream_masks_logits_and_does_not_leak():
    torch.manual_seed(2)
    model = IntermediateFusionModel(encoders(), [{"image": 0, "audio": 1}, {"image": 1, "video": 2}], num_outputs=3).eval()
    mask = {"audio": torch.tensor([True, False, True, False])}
    b = make_batch(mask=mask)
    out = model(b)
    lg = out.unimodal_logits
    expect = lg["image"] + lg["video"] + lg["audio"] * mask["audio"][:, None]
    assert torch.allclose(out.logits, expect, atol=1e-6)
    assert torch.equal(out.embeddings["audio"][~mask["audio"]], torch.zeros(2, 6))
    assert torch.equal(out.extras["present.audio"], mask["audio"])
    # garbage in the absent audio rows changes nothing for the other streams
    inputs = dict(b.inputs)
    noisy = inputs["audio"].clone()
    noisy[~mask["audio"]] = torch.randn_like(noisy[~mask["audio"]]) * 50
    inputs["audio"] = noisy
    out2 = model(MultimodalBatch(inputs, b.mask, b.target))
    assert torch.allclose(out2.logits, out.logits, atol=1e-5)
    for m in ("image", "video"):
        assert torch.allclose(out2.unimodal_logits[m], lg[m], atol=1e-5)
    mean_model = IntermediateFusionModel(encoders(), [], num_outputs=3, combine="mean").eval()
    o = mean_model(b)
    n = 2 + mask["audio"].float()
    assert torch.allclose(o.logits, (o.unimodal_logits["image"] + o.unimodal_logits["video"]
                                     + o.unimodal_logits["audio"] * mask["audio"][:, None]) / n[:, None], atol=1e-6)


def test_state_dict_round_trip_and_determinism():
    b = make_batch()
    a = IntermediateFusionModel(encoders(), [{"image": 0, "audio": 1}], num_outputs=3, head_hidden=[5]).eval()
    c = IntermediateFusionModel(encoders(), [{"image": 0, "audio": 1}], num_outputs=3, head_hidden=[5]).eval()
    torch.manual_seed(3)
    for p in c.parameters():
        p.data.normal_()
    c.load_state_dict(a.state_dict())
    assert torch.equal(a(b).logits, c(b).logits)


def test_per_stream_param_groups_share_all_blocks():
    model = IntermediateFusionModel(encoders(), [{"image": 0, "audio": 1}, {"image": 1, "video": 2}], num_outputs=3)
    groups = per_stream_param_groups(model)
    assert sorted(groups) == ["audio", "image", "video"]
    block_ids = {id(p) for p in model.blocks.parameters()}
    for m, ps in groups.items():
        ids = {id(p) for p in ps}
        assert block_ids <= ids
        own = {id(p) for p in model.encoders[m].parameters()} | {id(p) for p in model.heads[m].parameters()}
        assert ids == own | block_ids
        assert len(ids) == len(ps)
    with pytest.raises(ConfigError):
        per_stream_param_groups(nn.Linear(2, 2))


class _StubSystem:
    """What PerStreamScheme uses of the LightningModule, with plain SGD optimisers."""

    def __init__(self, model, lr):
        from mmfuse.schemes.per_stream import stream_param_groups

        self.model, self.lr, self.logged = model, lr, []
        groups = stream_param_groups(model)
        self.opts = [torch.optim.SGD(groups[s], lr=lr) for s in sorted(groups)]

    def make_optimizer(self, params):
        return torch.optim.SGD(params, lr=self.lr)

    def optimizers(self):
        return self.opts

    def task_loss(self, scores, target, index=None):
        return torch.nn.functional.cross_entropy(scores, target.long())

    def manual_backward(self, loss):
        loss.backward()

    def clip(self, opt):
        pass

    def log_train_loss(self, loss, batch):
        self.logged.append(loss)


def test_per_stream_scheme_matches_hand_computation():
    """One per_stream step = for each stream in sorted order: SGD on that stream's loss (rows where present)
    over its encoder, head and every shared block; checked against a hand-written loop on a copy."""
    import copy

    from mmfuse.schemes.per_stream import PerStreamScheme

    torch.manual_seed(4)
    model = IntermediateFusionModel(encoders(), [{"image": 0, "audio": 1}], num_outputs=3)
    b = make_batch(mask={"audio": torch.tensor([True, False, True, False])})
    ref = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    system = _StubSystem(model, lr=0.1)
    scheme = PerStreamScheme()
    scheme.configure_optimizers(system)
    scheme.training_step(system, b, 0)
    groups = per_stream_param_groups(ref)
    for s in sorted(groups):
        out = ref(b)
        rows = out.extras["present." + s]
        loss = torch.nn.functional.cross_entropy(out.unimodal_logits[s][rows], b.target[rows])
        for p in ref.parameters():
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in groups[s]:
                if p.grad is not None:
                    p -= 0.1 * p.grad
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p, q, msg=n)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("blocks.0") for n in changed)
    assert all(any(n.startswith(f"encoders.{m}") for n in changed) for m in ("audio", "image", "video"))
    assert len(system.logged) == 1


def test_normalize_fusion_points_standalone():
    assert normalize_fusion_points([{"a": -1, "b": 0}], {"a": 3, "b": 1}) == [{"a": 2, "b": 0}]


def test_default_fusion_points_align_from_the_end():
    from mmfuse.models.intermediate import default_fusion_points

    assert default_fusion_points({"image": 2, "audio": 3}) == [{"audio": 1, "image": 0}, {"audio": 2, "image": 1}]
    assert default_fusion_points({"a": 4, "b": 2, "c": 3}, count=1) == [{"a": 3, "b": 1, "c": 2}]
    with pytest.raises(ConfigError, match="count"):
        default_fusion_points({"a": 2, "b": 2}, count=3)
    model = IntermediateFusionModel(encoders(), "auto", num_outputs=3)
    assert model.fusion_points == [{"audio": 1, "image": 0, "video": 2}, {"audio": 2, "image": 1, "video": 3}]
    assert model(make_batch()).logits.shape == (4, 3)


def test_default_fusion_points_are_the_top_two_stages_only():
    """The default places blocks on the top two stages (the paper's upper layers), not after every stage."""
    from mmfuse.models.intermediate import default_fusion_points

    # 3 and 4 stages: the old default (one block per stage of the shallower stream) gave 3 points
    assert default_fusion_points({"image": 3, "audio": 4}) == [{"audio": 2, "image": 1}, {"audio": 3, "image": 2}]
    assert default_fusion_points({"a": 5, "b": 5}) == [{"a": 3, "b": 3}, {"a": 4, "b": 4}]
    # a stream with a single stage: one block, after its only stage and the other's last stage
    assert default_fusion_points({"image": 1, "audio": 3}) == [{"audio": 2, "image": 0}]
    # the explicit count still reaches lower stages
    assert len(default_fusion_points({"a": 4, "b": 4}, count=4)) == 4
    enc = {"image": TinyStaged(1, [2, 3, 4]), "audio": TinyStaged(3, [2, 3, 4, 5], dims=1)}
    model = IntermediateFusionModel(enc, "auto", num_outputs=2)
    assert model.fusion_points == [{"audio": 2, "image": 1}, {"audio": 3, "image": 2}]
    assert [b.channels for b in model.blocks] == [{"audio": 4, "image": 3}, {"audio": 5, "image": 4}]
