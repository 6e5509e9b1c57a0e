"""Tests for thrombseg.training.modality_dropout (issue 4): gradual modality dropout."""

from __future__ import annotations

import math

import pytest
import torch

from thrombseg.training.modality_dropout import GradualModalityDropout, attenuation_at

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
    assert gmd.attenuation(0, 100) == 0.25 and gmd.attenuation(99, 100) == 1.0
    with pytest.raises(ValueError):
        GradualModalityDropout(p=1.5)
    x, available = ones(2, 2)
    with pytest.raises(ValueError):
        gmd(x, available, attenuation=1.2)
    with pytest.raises(ValueError):
        gmd(x, available[:, :1], attenuation=0.5)
