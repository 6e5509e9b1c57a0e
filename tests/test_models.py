"""Tests for thrombseg.models (issue 4): shapes, gradients, masking, equations, registry."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from thrombseg.models import (
    MODEL_REGISTRY,
    AttentionGateFusion,
    AttLLSTM,
    CLSTMNet,
    ConvLSTM,
    LogicLSTM,
    LogicOperation,
    TransferLayer,
    UNet25D,
    UpAttLLSTM,
    build_model,
)

torch.set_num_threads(1)  # tiny tensors: threading only adds overhead

# Tiny widths so the whole grid runs in seconds on 2 cores.
SMALL = {
    "upattllstm": dict(widths=(4, 8, 8), n_convs=1, n_c=2, n_l=4),
    "attllstm": dict(p1=2, p2=4, embed_dim=8, n_heads=2, image_channels=4, n_c=2, n_l=4),
    "clstm": dict(stem_channels=4, hidden=4),
    "unet25d": dict(widths=(4, 8, 8), n_convs=1),
}
# Exact parameter counts of the default configurations (M = 4 sequences, K = 2 classes).
DEFAULT_PARAMS = {"upattllstm": 656149, "attllstm": 30354, "clstm": 14706, "unet25d": 484050}


def small(name: str, m: int = 3, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, n_modalities=m, n_classes=2, **{**SMALL[name], **kw})


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
@pytest.mark.parametrize("m,s,h,w", [(1, 1, 16, 16), (2, 3, 17, 23), (4, 2, 9, 30),
                                     (3, 1, 5, 7), (4, 4, 32, 8)])
def test_output_shapes(name, m, s, h, w):
    model = small(name, m=m).eval()
    x = torch.randn(2, m, s, h, w)
    available = torch.ones(2, m, dtype=torch.bool)
    with torch.no_grad():
        y = model(x, available)
    assert y.shape == (2, 2, s, h, w)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_default_configs_run_and_param_counts(name):
    model = build_model(name, n_modalities=4, n_classes=2).eval()
    assert model.n_modalities == 4 and model.n_classes == 2
    assert n_params(model) == DEFAULT_PARAMS[name]
    with torch.no_grad():
        y = model(torch.randn(1, 4, 2, 19, 21), torch.tensor([[True, False, True, True]]))
    assert y.shape == (1, 2, 2, 19, 21)


def _assert_all_grads(model, x, available):
    model.train()
    logits = model(x, available)
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 2, (x.shape[0], *x.shape[2:]), generator=g)
    F.cross_entropy(logits, target).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"zero gradient at {pname}"


@pytest.mark.parametrize("name,kw", [
    ("upattllstm", {}),
    ("upattllstm", dict(stem="shared", recurrent_levels=(0, -1), bidirectional=True)),
    ("upattllstm", dict(double_pass=False, gated_skips=False)),
    ("attllstm", {}),
    ("attllstm", dict(bidirectional=True, p1=4, p2=2)),
    ("clstm", {}),
    ("unet25d", dict(gated_skips=True)),
])
def test_gradients_reach_every_parameter(name, kw):
    model = small(name, m=3, **kw)
    x = torch.randn(2, 3, 3, 13, 18)
    _assert_all_grads(model, x, torch.ones(2, 3, dtype=torch.bool))


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("available", [[[True, False, True, True], [True, True, False, False]],
                                       [[True, False, False, True], [False, True, False, False]]])
def test_absent_sequence_voxels_do_not_change_output(name, train, available):
    model = small(name, m=4).train(train)
    x = torch.randn(2, 4, 3, 15, 20)
    available = torch.tensor(available)
    x2 = x.clone()
    x2[0, 1] = torch.randn(3, 15, 20) * 100
    x2[1, 2] = float("nan")
    x2[1, 3, 1, 2:5] = float("inf")
    with torch.set_grad_enabled(train):
        y1, y2 = model(x, available), model(x2, available)
    assert torch.equal(y1, y2)
    assert torch.isfinite(y1).all()


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_one_sequence(name):
    x = torch.randn(1, 1, 2, 12, 14)
    model = small(name, m=1).eval()
    with torch.no_grad():
        assert model(x, torch.ones(1, 1, dtype=torch.bool)).shape == (1, 2, 2, 12, 14)
    # A 4-sequence model with a single sequence available.
    model = small(name, m=4).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 4, 2, 12, 14), torch.tensor([[False, False, True, False]]))
    assert y.shape == (1, 2, 2, 12, 14) and torch.isfinite(y).all()


def test_available_none_means_all_and_bad_shapes_raise():
    model = small("upattllstm", m=2).eval()
    x = torch.randn(1, 2, 2, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), model(x, torch.ones(1, 2, dtype=torch.bool)))
    with pytest.raises(ValueError):
        model(x, torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError):
        model(torch.randn(1, 3, 2, 8, 8))


def test_fusion_renormalises_over_available():
    torch.manual_seed(0)
    fusion = AttentionGateFusion(4)
    feats = torch.randn(3, 3, 4, 5, 6, requires_grad=True)
    mask = torch.tensor([[True, True, True], [False, True, False], [False, False, False]])
    fused, weights = fusion(feats, mask)
    assert torch.allclose(weights[0].sum(0), torch.ones(5, 6))
    assert torch.equal(weights[1, 1], torch.ones(5, 6))       # the only available one
    assert (weights[1, [0, 2]] == 0).all() and (weights[2] == 0).all()
    assert torch.equal(fused[1], feats[1, 1].detach())
    assert (fused[2] == 0).all()                               # nothing available -> zeros
    fused.sum().backward()
    assert torch.isfinite(feats.grad).all() and (feats.grad[1, 0] == 0).all()


def test_upattllstm_chunked_inference_matches():
    x = torch.randn(2, 3, 5, 16, 16)
    available = torch.tensor([[True, True, False], [True, True, True]])
    a = small("upattllstm", m=3, infer_chunk=1).eval()
    b = small("upattllstm", m=3, infer_chunk=None).eval()
    with torch.no_grad():
        assert torch.allclose(a(x, available), b(x, available), atol=1e-5)


def test_transfer_layer_matches_maxpool_and_windows():
    assert [TransferLayer.window(16, i) for i in (1, 2, 3, 4, 5, 6)] == [16, 8, 4, 2, 1, 1]
    layer = TransferLayer(8, 2)                                # k = 4 groups of m = 2
    x = torch.randn(2, 8, 16, 11)
    y = layer(x)
    for i in range(4):
        ph, pw = TransferLayer.window(16, i + 1), TransferLayer.window(11, i + 1)
        xp = F.pad(x[:, 2 * i:2 * i + 2], ((pw - 1) // 2, pw // 2, (ph - 1) // 2, ph // 2),
                   value=float("-inf"))
        assert torch.equal(y[:, 2 * i:2 * i + 2], F.max_pool2d(xp, (ph, pw), stride=1))
    with pytest.raises(ValueError):
        TransferLayer(6, 4)


def test_logic_operation_follows_equations():
    """Fused implementation == eq. (10) with separate L1..L4, and the paper's parameter count."""
    torch.manual_seed(0)
    cin, n_c, n_l, n_t, k, g = 3, 2, 4, 4, 3, 4
    op = LogicOperation(cin, n_c, n_l, k, n_t=n_t, m=2, n_gates=g)
    per_gate = ((2 * n_c + cin) * n_c * k * k + n_c          # L1 (w x w, bias)
                + 2 * n_l * n_c                              # L2 (1 x 1, no bias)
                + (2 * n_c + cin) * n_t * k * k + n_t        # L3 (w x w, bias)
                + (n_t + 2 * n_l) * n_l + n_l)               # L4 (1 x 1, bias)
    assert n_params(op) == g * per_gate
    x, c, h = (torch.randn(2, ch, 9, 10) for ch in (cin, n_c + n_l, n_c + n_l))
    out = op(x, c, h)
    a_c = torch.cat([c[:, :n_c], h[:, :n_c], x], 1)
    a_l = torch.cat([c[:, n_c:], h[:, n_c:]], 1)
    w_ac = op.conv_ac.weight.view(g, n_c + n_t, *op.conv_ac.weight.shape[1:])
    b_ac = op.conv_ac.bias.view(g, n_c + n_t)
    w_al = op.conv_al.weight.view(g, n_c + n_l, 2 * n_l, 1, 1)
    w_t = op.conv_t.weight.view(g, n_l, n_t, 1, 1)
    b_t = op.conv_t.bias.view(g, n_l)
    for gi in range(g):
        w1, b1 = w_ac[gi, :n_c], b_ac[gi, :n_c]
        w3, b3 = w_ac[gi, n_c:], b_ac[gi, n_c:]
        w2 = w_al[gi, :n_c]
        w4 = torch.cat([w_t[gi], w_al[gi, n_c:]], dim=1)     # L4 acts on T(.) || A_l
        a1 = F.conv2d(a_c, w1, b1, padding=1) + F.conv2d(a_l, w2)
        a2 = F.conv2d(torch.cat([op.transfer(F.conv2d(a_c, w3, b3, padding=1)), a_l], 1),
                      w4, b_t[gi])
        assert torch.allclose(out[:, gi], torch.cat([a1, a2], 1), atol=1e-5)


@pytest.mark.parametrize("cls,args", [(LogicLSTM, (3, 2, 4)), (ConvLSTM, (3, 4))])
def test_double_pass_and_bidirectional(cls, args):
    torch.manual_seed(0)
    x = torch.randn(1, 4, 3, 8, 8)
    x2 = x.clone()
    x2[:, -1] += 1.0                                           # change only the last slice
    single = cls(*args, double_pass=False).eval()
    double = cls(*args, double_pass=True).eval()
    bi = cls(*args, double_pass=False, bidirectional=True).eval()
    double.load_state_dict(single.state_dict())
    with torch.no_grad():
        # single pass: causal, slice 0 cannot see slice 3
        assert torch.equal(single(x)[:, 0], single(x2)[:, 0])
        # double pass: the memory of the whole stack reaches the first slice
        assert not torch.allclose(double(x)[:, 0], double(x2)[:, 0])
        # second pass differs from a cold start
        assert not torch.allclose(double(x)[:, 0], single(x)[:, 0])
        yb = bi(x)
        assert yb.shape[2] == 2 * single.hidden == bi.out_channels
        assert not torch.allclose(yb[:, 0], bi(x2)[:, 0])


def test_registry_and_from_config():
    assert set(MODEL_REGISTRY) == {"upattllstm", "attllstm", "clstm", "unet25d"}
    assert isinstance(build_model("UpAttLLSTM", **SMALL["upattllstm"]), UpAttLLSTM)
    assert isinstance(build_model("attllstm"), AttLLSTM)
    assert isinstance(build_model("clstm"), CLSTMNet)
    assert isinstance(build_model("unet25d"), UNet25D)
    with pytest.raises(KeyError):
        build_model("nope")
    with pytest.raises(TypeError):
        build_model("clstm", not_an_option=1)
    for name, cls in MODEL_REGISTRY.items():
        model = cls.from_config({"name": name, "n_modalities": 3, "n_classes": 3, **SMALL[name]})
        assert (model.n_modalities, model.n_classes) == (3, 3)
        assert n_params(cls.from_config(model.config)) == n_params(model)


@pytest.mark.slow
def test_default_upattllstm_full_volume_under_5s():
    model = build_model("upattllstm").eval()
    x = torch.randn(1, 4, 40, 256, 256)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)                                   # the requirement: 2 CPU cores
    try:
        with torch.no_grad():
            model(x[:, :, :4])                                 # warm-up
            t = time.perf_counter()
            model(x)
            elapsed = time.perf_counter() - t
    finally:
        torch.set_num_threads(threads)
    assert elapsed < 5.0


# ---------------------------------------------------------------- AttLLSTM as published (MIDL 2024)
FIVE = ["swi", "phase", "dwi", "adc", "flair"]


def _attllstm(modalities, **kw) -> AttLLSTM:
    torch.manual_seed(0)
    return build_model("attllstm", n_modalities=len(modalities), modalities=modalities,
                       **{**SMALL["attllstm"], **kw}).eval()


def _inputs_seen(model: AttLLSTM, x, available) -> dict:
    """What the query embedding and each key embedding received (per slice: (B*S, C, H, W))."""
    seen, hooks = {}, []
    hooks.append(model.embed_query.register_forward_hook(lambda mod, inp, out: seen.__setitem__("query", inp[0])))
    for j, emb in enumerate(model.embed_keys):
        hooks.append(emb.register_forward_hook(lambda mod, inp, out, j=j: seen.__setitem__(j, inp[0])))
    with torch.no_grad():
        model(x, available)
    for h in hooks:
        h.remove()
    return seen


def _slices(x, m):
    """Channel m of (B, M, S, H, W) as the per-slice batch (B*S, H, W) the model embeds."""
    return x[:, m].reshape(-1, *x.shape[-2:])


@pytest.mark.parametrize("order", [FIVE, ["flair", "dwi", "phase", "adc", "swi"]])
def test_attllstm_dwi_queries_swi_and_phase_whatever_the_order(order):
    model = _attllstm(order)
    assert model.roles == {"query": "dwi", "keys": ["swi", "phase"],
                           "extras": [s for s in order if s in ("adc", "flair")]}
    x = torch.randn(2, 5, 2, 8, 8)
    seen = _inputs_seen(model, x, torch.ones(2, 5, dtype=torch.bool))
    idx = {s: order.index(s) for s in order}
    assert torch.equal(seen["query"][:, 0], _slices(x, idx["dwi"]))
    for c, extra in enumerate(model.roles["extras"], start=1):   # ADC, FLAIR: query-stream channels
        assert torch.equal(seen["query"][:, c], _slices(x, idx[extra]))
    assert torch.equal(seen[0][:, 0], _slices(x, idx["swi"]))
    assert torch.equal(seen[1][:, 0], _slices(x, idx["phase"]))
    # and by perturbation: DWI changes the output, as a query must
    x2 = x.clone()
    x2[:, idx["dwi"]] += 1.0
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x2))


def test_attllstm_roles_are_configurable_and_checked():
    assert _attllstm(["t2star", "phase", "dwi"]).roles["keys"] == ["t2star", "phase"]  # SWI fallback
    assert _attllstm(FIVE, extras="keys").roles == {"query": "dwi", "keys": ["swi", "phase", "adc", "flair"],
                                                     "extras": []}
    assert _attllstm(FIVE, extras="ignore").roles["extras"] == []
    assert _attllstm(FIVE, query="adc", keys=["swi"]).roles == {"query": "adc", "keys": ["swi"],
                                                               "extras": ["phase", "dwi", "flair"]}
    with pytest.raises(ValueError, match="key sequence 'swi' is not among"):
        _attllstm(["dwi", "adc", "flair"])
    with pytest.raises(ValueError, match="both the query and a key"):
        _attllstm(FIVE, keys=["dwi"])
    with pytest.raises(ValueError, match="extras"):
        _attllstm(FIVE, extras="values")


def test_attllstm_query_falls_back_to_the_first_available_key():
    model = _attllstm(FIVE)
    x = torch.randn(3, 5, 2, 8, 8)
    available = torch.tensor([[True, True, False, True, True],     # no DWI: SWI queries
                              [False, True, False, True, True],    # no DWI, no SWI: PHASE
                              [False, False, False, True, True]])  # no key at all: zeros
    q = _inputs_seen(model, x, available)["query"][:, 0].view(3, 2, 8, 8)
    assert torch.equal(q[0], x[0, 0]) and torch.equal(q[1], x[1, 1]) and (q[2] == 0).all()


def test_attllstm_missing_key_changes_nothing_but_the_mask():
    model = _attllstm(FIVE)
    x = torch.randn(2, 5, 3, 12, 12)
    available = torch.ones(2, 5, dtype=torch.bool)
    available[0, 1] = False                                        # PHASE absent in sample 0
    available[1, :2] = False                                       # no key at all in sample 1
    zero, noise = x.clone(), x.clone()
    zero[0, 1], zero[1, :2] = 0.0, 0.0
    noise[0, 1], noise[1, :2] = torch.randn(3, 12, 12) * 50, torch.randn(2, 3, 12, 12) * 50
    with torch.no_grad():
        y = model(zero, available)
        assert torch.equal(y, model(noise, available))
        assert not torch.allclose(y, model(x, torch.ones(2, 5, dtype=torch.bool)))
        # Masked out of the key fusion, not merely zero-filled: the absent keys' embeddings (weights
        # included) cannot reach the output; with a zero-filled channel they would, through the bias.
        for emb in model.embed_keys:                               # (not uniform: LayerNorm follows)
            emb.bias.add_(torch.linspace(-1.0, 1.0, emb.bias.numel()))
        y_keys_changed = model(zero, available)
    assert not torch.allclose(y_keys_changed[0], y[0])             # SWI still present in sample 0
    assert torch.equal(y_keys_changed[1], y[1])                    # sample 1 has no key: untouched
    model = _attllstm(FIVE)
    with torch.no_grad():
        y0 = model(zero, available)[0]
        model.embed_keys[1].weight.mul_(3.0).add_(0.5)             # PHASE's embedding only
        model.embed_keys[1].bias.add_(torch.linspace(-1.0, 1.0, model.embed_keys[1].bias.numel()))
        assert torch.equal(model(zero, available)[0], y0)


def test_attllstm_gets_its_modalities_from_the_trainer():
    from thrombseg.models.checkpoint import build_network
    from thrombseg.training.config import TrainConfig

    cfg = TrainConfig.from_dict({"model": "attllstm", "modalities": ["flair", "adc", "dwi", "phase", "swi"],
                                 "model_kwargs": SMALL["attllstm"]})
    assert build_network(cfg).roles == {"query": "dwi", "keys": ["swi", "phase"], "extras": ["flair", "adc"]}
    cfg = TrainConfig.from_dict({"model": "attllstm", "modalities": FIVE,
                                 "model_kwargs": {**SMALL["attllstm"], "query": "flair", "keys": ["phase"]}})
    assert build_network(cfg).roles == {"query": "flair", "keys": ["phase"], "extras": ["swi", "dwi", "adc"]}


def test_old_attllstm_checkpoint_fails_in_one_line(tmp_path):
    from thrombseg.models.checkpoint import CheckpointError, build_network, load_model, save_checkpoint
    from thrombseg.training.config import TrainConfig

    cfg = TrainConfig.from_dict({"model": "attllstm", "modalities": FIVE})
    sd = build_network(cfg).state_dict()
    # The earlier layout: embed_q over the first channel, embed_kv over the concatenated others.
    old = {k: v for k, v in sd.items() if not k.startswith(("embed_query", "embed_keys", "key_fusion"))}
    old |= {"embed_q.weight": torch.zeros(32, 1, 4, 4), "embed_q.bias": torch.zeros(32),
            "embed_kv.weight": torch.zeros(32, 4, 8, 8), "embed_kv.bias": torch.zeros(32)}
    save_checkpoint({"model": old, "config": cfg.to_dict()}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError) as exc:
        load_model(tmp_path / "old.pt")
    msg = str(exc.value)
    assert "\n" not in msg and str(tmp_path / "old.pt") in msg and "retrain" in msg
    save_checkpoint({"model": sd, "config": cfg.to_dict()}, tmp_path / "new.pt")
    assert load_model(tmp_path / "new.pt")[0].roles["query"] == "dwi"


def test_transfer_windows_are_those_of_the_training_crop_at_any_input_size():
    """With a fixed size the windows do not grow with the input: a whole 192-px slice at inference is
    pooled with the windows of the 64-px training crop (not [24, 12, 6, 3] instead of [8, 4, 2, 1])."""
    from thrombseg.models.transfer import TransferLayer, scaled_size

    assert scaled_size(64, 8) == (8, 8) and scaled_size([64, 32], 2) == (32, 16) and scaled_size(None, 8) is None
    fixed, free = TransferLayer(8, 2, size=(8, 8)), TransferLayer(8, 2)
    x = torch.zeros(1, 8, 24, 24)
    x[:, :, 12, 12] = 1.0  # one hot voxel: the pooled map shows each group's window
    widths_fixed = [int((fixed(x)[0, c, 12] > 0).sum()) for c in range(0, 8, 2)]
    widths_free = [int((free(x)[0, c, 12] > 0).sum()) for c in range(0, 8, 2)]
    assert widths_fixed == [8, 4, 2, 1] and widths_free == [24, 12, 6, 3]
    crop = x[:, :, 8:16, 8:16]  # on an input of the training size both agree
    assert torch.equal(fixed(crop), free(crop))


def test_models_size_transfer_windows_from_the_training_crop_and_old_files_keep_theirs(tmp_path):
    from thrombseg.models.checkpoint import build_network, load_model, save_checkpoint
    from thrombseg.training.config import TrainConfig

    cfg = TrainConfig.from_dict({"modalities": ["swi", "dwi"], "crop": [64, 64], "model_kwargs": {"widths": [4, 8, 16, 32]}})
    net = build_network(cfg)
    assert net.recurrent["3"].cell.logic.transfer.size == (8, 8)  # bottleneck of a 64-px crop
    sd = net.state_dict()
    save_checkpoint({"model": sd, "config": cfg.to_dict(), "thrombseg_format": 2}, tmp_path / "new.pt")
    save_checkpoint({"model": sd, "config": cfg.to_dict(), "thrombseg_format": 1}, tmp_path / "old.pt")
    assert load_model(tmp_path / "new.pt")[0].recurrent["3"].cell.logic.transfer.size == (8, 8)
    assert load_model(tmp_path / "old.pt")[0].recurrent["3"].cell.logic.transfer.size is None  # as trained
    paper = TrainConfig.from_dict({"modalities": ["swi", "dwi"], "model_kwargs": {"widths": [4, 8], "transfer_size": None}})
    assert build_network(paper).recurrent["1"].cell.logic.transfer.size is None  # eq. 12 read literally
