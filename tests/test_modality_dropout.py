"""Tests for thrombseg.training.modality_dropout (issue 4): gradual modality dropout."""

from __future__ import annotations

import math

import pytest
import torch

from thrombseg.training.modality_dropout import PRESETS, GradualModalityDropout, attenuation_at, stage_index

torch.set_num_threads(1)  # tiny tensors: threading only adds overhead


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ones(b: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ones(b, m, 2, 3, 3), torch.ones(b, m, dtype=torch.bool)


def factors(x_out: torch.Tensor) -> torch.Tensor:
    """Per (sample, sequence) multiplier when the input was all ones and noise is scalar."""
    f = x_out.flatten(2)
    assert (f == f[..., :1]).all(), "multiplier must be one scalar per (sample, sequence)"
    return f[..., 0]


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.8])
def test_empirical_drop_rate_within_3_sigma(p):
    gmd = GradualModalityDropout(p=p, eligible=(1, 2, 3))   # sequence 0 is never dropped,
    x, available = ones(5000, 4)                            # so the keep-one rule never binds
    x_out, _ = gmd(x, available, attenuation=0.5, generator=gen(1))
    dropped = factors(x_out)[:, 1:] != 1.0
    n = dropped.numel()
    assert abs(dropped.float().mean().item() - p) < 3 * math.sqrt(p * (1 - p) / n)
    assert (factors(x_out)[:, 0] == 1.0).all()              # not eligible -> untouched


@pytest.mark.parametrize("a", [0.25, 0.3, 0.75])
def test_every_drop_uses_the_same_attenuation(a):
    """Catches the reference bug (attenuation reassigned in the loop: drops alternate a, 1-a)."""
    gmd = GradualModalityDropout(p=0.9)
    x, available = ones(32, 4)
    f = factors(gmd(x, available, attenuation=a, generator=gen(2))[0])
    dropped = f != 1.0
    assert dropped.sum() > 50                               # many drops in one batch
    assert torch.allclose(f[dropped], torch.full_like(f[dropped], 1.0 - a), rtol=0, atol=1e-7)


def test_availability_cleared_only_at_full_attenuation():
    gmd = GradualModalityDropout(p=0.5)
    x, available = ones(200, 3)
    x_out, av = gmd(x, available, attenuation=1.0, generator=gen(3))
    dropped = factors(x_out) != 1.0
    assert dropped.any() and torch.equal(av, ~dropped)
    assert (x_out[dropped[:, :, None, None, None].expand_as(x_out)] == 0).all()
    x_out, av = gmd(x, available, attenuation=0.75, generator=gen(3))
    assert torch.equal(av, available) and (factors(x_out) != 1.0).any()


@pytest.mark.parametrize("a", [0.5, 1.0])
def test_never_all_sequences_dropped(a):
    gmd = GradualModalityDropout(p=1.0)
    x, available = ones(500, 3)
    available[::2, 0] = False                               # some already missing
    x[~available] = 0.0
    x_out, av = gmd(x, available, attenuation=a, generator=gen(4))
    kept = (factors(x_out) == 1.0) & available
    assert (kept.sum(1) == 1).all()                         # p = 1: exactly one survivor
    if a == 1.0:
        assert (av.sum(1) == 1).all() and torch.equal(av, kept)
    # the survivor is drawn uniformly among the available ones
    counts = kept[1::2].sum(0).float()                      # rows with all 3 available
    assert (counts > 40).all()


def test_already_absent_untouched_and_inputs_not_modified():
    gmd = GradualModalityDropout(p=0.7, sigma=0.1)
    x = torch.randn(50, 3, 2, 4, 4)
    available = torch.ones(50, 3, dtype=torch.bool)
    available[:, 2] = False
    x0, a0 = x.clone(), available.clone()
    x_out, av = gmd(x, available, attenuation=1.0, generator=gen(5))
    assert torch.equal(x, x0) and torch.equal(available, a0)
    assert torch.equal(x_out[:, 2], x[:, 2]) and not av[:, 2].any()


def test_scalar_and_voxel_noise():
    x, available = ones(400, 2)
    f = factors(GradualModalityDropout(p=1.0, eligible=(1,), sigma=0.1)(
        x, available, 0.5, generator=gen(6))[0])[:, 1]
    assert abs(f.mean().item() - 0.5) < 0.03 and abs(f.std().item() - 0.1) < 0.02
    x_out, _ = GradualModalityDropout(p=1.0, eligible=(1,), voxel_sigma=0.1)(
        x, available, 0.5, generator=gen(6))
    assert x_out[:, 1].flatten(1).std(1).min() > 0          # varies within a sequence
    assert (x_out[:, 0] == 1).all()


def test_deterministic_under_seed():
    gmd = GradualModalityDropout(p=0.5, sigma=0.05, voxel_sigma=0.01)
    x = torch.randn(8, 4, 3, 5, 5)
    available = torch.ones(8, 4, dtype=torch.bool)
    out1 = gmd(x, available, 0.5, generator=gen(7))
    out2 = gmd(x, available, 0.5, generator=gen(7))
    out3 = gmd(x, available, 0.5, generator=gen(8))
    assert torch.equal(out1[0], out2[0]) and torch.equal(out1[1], out2[1])
    assert not torch.equal(out1[0], out3[0])
    torch.manual_seed(9)
    a = gmd(x, available, 0.5)[0]
    torch.manual_seed(9)
    assert torch.equal(a, gmd(x, available, 0.5)[0])


def test_staircase_schedule_each_epoch():
    expected = [0.25] * 25 + [0.5] * 25 + [0.75] * 25 + [1.0] * 25
    assert [attenuation_at(e, 100) for e in range(100)] == expected
    # boundaries at 2.5, 5 and 7.5 epochs: a stage starts at the first epoch at or past them
    assert [attenuation_at(e, 10) for e in range(10)] == [.25] * 3 + [.5] * 2 + [.75] * 3 + [1.] * 2
    assert [attenuation_at(e, 8) for e in range(8)] == [.25, .25, .5, .5, .75, .75, 1., 1.]
    assert [attenuation_at(e, 3) for e in range(3)] == [.25, .5, .75]
    assert attenuation_at(120, 100) == 1.0
    assert attenuation_at(3, 10, stages=(0.0, 1.0), boundaries=(0.0, 0.5)) == 0.0


def test_linear_cosine_fixed_schedules_each_epoch():
    for e in range(100):
        t = min(e / 75, 1.0)
        assert attenuation_at(e, 100, "linear") == pytest.approx(0.25 + 0.75 * t)
        assert attenuation_at(e, 100, "cosine") == pytest.approx(
            0.25 + 0.75 * (1 - math.cos(math.pi * t)) / 2)
        assert attenuation_at(e, 100, "fixed") == 1.0
    lin = [attenuation_at(e, 40, "linear") for e in range(40)]
    assert lin == sorted(lin) and lin[0] == 0.25 and lin[-1] == 1.0


@pytest.mark.parametrize("kwargs", [dict(epoch=-1, n_epochs=10), dict(epoch=0, n_epochs=0),
                                    dict(epoch=0, n_epochs=10, kind="step"),
                                    dict(epoch=0, n_epochs=10, stages=(0.5,)),
                                    dict(epoch=0, n_epochs=10, stages=(0.2, 1.5),
                                         boundaries=(0, .5))])
def test_schedule_rejects_bad_input(kwargs):
    with pytest.raises(ValueError):
        attenuation_at(**kwargs)


def test_module_schedule_and_validation():
    gmd = GradualModalityDropout(schedule="linear")
    assert attenuation_at(0, 100, "linear") == 0.25 and attenuation_at(99, 100, "linear") == 1.0
    with pytest.raises(ValueError):
        GradualModalityDropout(p=1.5)
    x, available = ones(2, 2)
    with pytest.raises(ValueError):
        gmd(x, available, attenuation=1.2)
    with pytest.raises(ValueError):
        gmd(x, available[:, :1], attenuation=0.5)


# ---------------------------------------------------------------- the default is pinned
def _gmd_as_of_3d3c0ba(x, available, a, p, sigma, eligible, voxel_sigma, generator):
    """The default (per-sequence) algorithm exactly as it was before grouping/none/presets (commit
    3d3c0ba), kept here so that any change of the demo's random draws or results fails a test."""
    b, m = x.shape[:2]
    eligible_mask = torch.zeros(m, dtype=torch.bool)
    eligible_mask[list(range(m)) if eligible is None else list(eligible)] = True
    u = torch.rand(b, m, generator=generator)
    eps = torch.randn(b, m, generator=generator) * sigma
    tie = torch.rand(b, m, generator=generator)
    drop = (u < p) & eligible_mask & available
    all_gone = (available & ~drop).sum(1) == 0
    if all_gone.any():
        keep = torch.where(drop, tie, torch.full_like(tie, -1.0)).argmax(dim=1)
        drop &= ~(torch.zeros_like(drop).scatter_(1, keep[:, None], True) & all_gone[:, None])
    factor = torch.where(drop, (1.0 - a) + eps, torch.ones_like(eps)).view(b, m, *([1] * (x.dim() - 2)))
    if voxel_sigma > 0:
        noise = torch.randn(*x.shape, generator=generator) * voxel_sigma
        factor = torch.where(drop.view(b, m, *([1] * (x.dim() - 2))), factor + noise, factor)
    return x * factor, (available & ~drop if a >= 1.0 else available.clone())


@pytest.mark.parametrize("p,sigma,eligible,a,voxel_sigma", [
    (0.25, 0.05, None, 0.25, 0.0), (0.25, 0.05, None, 1.0, 0.0),  # the demo's setting
    (0.5, 0.05, (1, 2), 0.75, 0.0), (1.0, 0.1, None, 0.5, 0.01), (0.9, 0.0, (0, 3), 1.0, 0.0)])
def test_default_grouping_is_the_earlier_algorithm_bit_for_bit(p, sigma, eligible, a, voxel_sigma):
    x = torch.randn(9, 5, 2, 3, 4, generator=gen(11))
    available = torch.rand(9, 5, generator=gen(12)) > 0.2
    g1, g2 = gen(13), gen(13)
    out = GradualModalityDropout(p=p, sigma=sigma, eligible=eligible, voxel_sigma=voxel_sigma)(
        x, available, a, generator=g1)
    ref = _gmd_as_of_3d3c0ba(x, available, a, p, sigma, eligible, voxel_sigma, g2)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])
    assert torch.equal(g1.get_state(), g2.get_state())          # same number of draws, too


def test_default_output_pinned():
    """Values printed by the code at commit 3d3c0ba for this seed (p 0.25, sigma 0.05: the demo)."""
    g = gen(2024)
    x, available = ones(3, 5)
    available[1, 4] = False
    gmd = GradualModalityDropout(p=0.25, sigma=0.05)
    f = factors(gmd(x, available, 0.5, generator=g)[0])
    expected = torch.tensor([[1.0, 1.0, 1.0, 0.47292160987854004, 0.48993441462516785],
                             [1.0, 0.45019426941871643, 1.0, 1.0, 1.0],
                             [0.4392124116420746, 1.0, 0.4308600127696991, 1.0, 1.0]])
    assert torch.equal(f, expected)
    x_out, av = gmd(x, available, 1.0, generator=g)
    assert av.int().tolist() == [[1, 0, 0, 1, 0], [1, 0, 1, 0, 0], [1, 1, 1, 0, 1]]
    assert factors(x_out)[0, 1].item() == -0.024591553956270218
    assert torch.rand(1, generator=g).item() == 0.7818158864974976


# ---------------------------------------------------------------- none, grouping, sigma, presets
def test_none_is_the_exact_identity():
    x = torch.randn(16, 4, 2, 5, 5)
    available = torch.rand(16, 4) > 0.3
    g = gen(3)
    state = g.get_state()
    gmd = GradualModalityDropout(p=1.0, sigma=0.5, voxel_sigma=0.5, schedule="none")
    x_out, av = gmd(x, available, 0.0, generator=g)
    assert torch.equal(x_out, x) and torch.equal(av, available)
    assert torch.equal(g.get_state(), state)                    # nothing drawn
    assert not gmd.active(0, 10) and attenuation_at(5, 10, "none") == 0.0
    # attenuation None (before the first stage boundary) is the identity for any schedule
    x_out, av = GradualModalityDropout(p=1.0, sigma=0.5)(x, available, None, generator=g)
    assert torch.equal(x_out, x) and torch.equal(av, available) and torch.equal(g.get_state(), state)


@pytest.mark.parametrize("p", [0.3, 0.7])
def test_per_sample_grouping_drops_the_listed_sequences_together(p):
    gmd = GradualModalityDropout(p=p, eligible=(1, 2, 3), grouping="per_sample")
    x, available = ones(4000, 5)
    available[::3, 2] = False                                   # already absent: left alone
    f = factors(gmd(x, available, attenuation=0.5, generator=gen(21))[0])
    dropped = f != 1.0
    assert not dropped[:, [0, 4]].any()                         # not eligible
    eligible_av = available[:, 1:4]
    assert (dropped[:, 1:4] == (dropped[:, 1:4].any(1, keepdim=True) & eligible_av)).all()  # all or none
    rate = dropped.any(1).float().mean().item()                 # one draw per sample
    assert abs(rate - p) < 3 * math.sqrt(p * (1 - p) / len(f))
    per_seq = factors(GradualModalityDropout(p=p, eligible=(1, 2, 3))(x, available, 0.5, generator=gen(21))[0])
    split = (per_seq[:, 1:4] != 1.0).any(1) & ~((per_seq[:, 1:4] != 1.0) | ~eligible_av).all(1)
    assert split.any()                                          # per_sequence does split samples


def test_per_sample_keeps_one_sequence_and_one_attenuation():
    gmd = GradualModalityDropout(p=1.0, grouping="per_sample", sigma=0.0)
    x, available = ones(300, 3)
    x_out, av = gmd(x, available, 1.0, generator=gen(22))
    assert (av.sum(1) == 1).all()                               # every sequence listed: one survives
    f = factors(gmd(x, available, 0.25, generator=gen(23))[0])
    assert set(f.unique().tolist()) == {1.0, 0.75}              # no a / 1 - a alternation


@pytest.mark.parametrize("grouping", ["per_sequence", "per_sample"])
@pytest.mark.parametrize("sigma", [0.05, 0.1])
def test_sigma_is_the_std_of_the_multiplier(grouping, sigma):
    gmd = GradualModalityDropout(p=1.0, eligible=(1,), sigma=sigma, grouping=grouping)
    x, available = ones(3000, 2)
    f = factors(gmd(x, available, 0.5, generator=gen(24))[0])[:, 1]
    assert abs(f.mean().item() - 0.5) < 0.01 and abs(f.std().item() - sigma) < 0.1 * sigma


def test_reference_preset():
    from thrombseg.training.config import DropoutConfig, TrainConfig
    from thrombseg.training.trainer import make_dropout

    ref = PRESETS["reference"]
    assert ref["grouping"] == "per_sample" and ref["sigma"] == 0.1 and ref["schedule"] == "staircase"
    cfg = TrainConfig.from_dict({"modalities": ["swi", "phase", "dwi"], "dropout": {"preset": "reference", "p": 0.2}})
    d = cfg.dropout
    assert (d.grouping, d.sigma, d.p, tuple(d.stages), tuple(d.boundaries)) == (
        "per_sample", 0.1, 0.2, (0.25, 0.5, 0.75, 1.0), (0.0, 0.25, 0.5, 0.75))
    gmd = make_dropout(cfg)
    assert gmd.grouping == "per_sample" and gmd.sigma == 0.1
    # keys the config sets win; the stored config round-trips
    assert DropoutConfig.from_dict({"preset": "reference", "sigma": 0.02}).sigma == 0.02
    assert TrainConfig.from_dict(cfg.to_dict()).dropout == d
    assert DropoutConfig().grouping == "per_sequence" and DropoutConfig().sigma == 0.05  # defaults kept
    for bad, match in [({"preset": "authors"}, "preset"), ({"grouping": "per_batch"}, "grouping"),
                       ({"stages": [0.5], "boundaries": [0.0, 0.5]}, "equal length"),
                       ({"boundaries": [0.5, 0.0, 0.6, 0.7]}, "non-decreasing")]:
        with pytest.raises(ValueError, match=match) as exc:
            DropoutConfig.from_dict(bad)
        assert "\n" not in str(exc.value)


def test_nothing_before_the_first_boundary():
    stages, bounds = (0.5, 1.0), (0.3, 0.6)
    assert [stage_index(e, 10, bounds) for e in range(10)] == [-1] * 3 + [0] * 3 + [1] * 4
    assert [attenuation_at(e, 10, "staircase", stages, bounds) for e in range(10)] == [0.0] * 3 + [.5] * 3 + [1.] * 4
    lin = [attenuation_at(e, 10, "linear", stages, bounds) for e in range(10)]
    assert lin[:3] == [0.0] * 3 and lin[3] == 0.5 and lin[-1] == 1.0
    gmd = GradualModalityDropout(stages=stages, boundaries=bounds)
    assert [gmd.active(e, 10) for e in range(10)] == [False] * 3 + [True] * 7
    assert GradualModalityDropout(schedule="fixed", stages=stages, boundaries=bounds).active(0, 10)
