"""AttLLSTM (Vargas-Ibarra et al., MIDL 2024): CrossViT-style cross-attention then Logic-LSTM.

As published (section 2.2.1), DWI is the query ("only one diffusion modality is used", to guide
where the affected area is) and the susceptibility sequences SWAN + PHASE give the keys and values.
Here the roles are named sequences resolved against the model's ``modalities`` (the trainer passes
its channel list), so the channel order of a config does not change who queries whom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._blocks import ConfigMixin, batch_to_slices, padded_slices
from .attention import AttentionGateFusion
from .llstm import LogicLSTM
from .transfer import scaled_size

#: Channel names assumed when a model is built with ``n_modalities`` only: the project's standard
#: thrombus order (core.sequences.DEFAULT_MODALITIES), truncated; further channels are ``seq<i>``.
STANDARD_ORDER = ("swi", "phase", "dwi", "adc", "flair")
#: Other names a role may be filled by, in order: T2*-GRE is the project's SWI fallback
#: (core.sequences.FALLBACK) and SWAN is GE's SWI, the paper's name for it.
ALIASES: dict[str, tuple[str, ...]] = {"swi": ("swan", "t2star"), "swan": ("swi", "t2star")}
EXTRAS = ("query", "keys", "ignore")
#: State-dict keys only the pre-2026 layout had (first channel queried all the others).
_OLD_LAYOUT_KEYS = ("embed_kv.weight", "embed_q.weight")


def _sincos_2d(dim: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Fixed 2-D sine/cosine position code (h*w, dim); parameter-free so any slice size works."""
    q = max(dim // 4, 1)
    freq = 1.0 / (10000 ** (torch.arange(q, device=device, dtype=torch.float32) / q))
    ys = torch.arange(h, device=device, dtype=torch.float32)[:, None] * freq
    xs = torch.arange(w, device=device, dtype=torch.float32)[:, None] * freq
    ys = torch.cat([ys.sin(), ys.cos()], 1)[:, None, :].expand(h, w, 2 * q)
    xs = torch.cat([xs.sin(), xs.cos()], 1)[None, :, :].expand(h, w, 2 * q)
    pe = torch.cat([ys, xs], dim=-1).reshape(h * w, 4 * q)
    return F.pad(pe, (0, dim - 4 * q)).to(dtype)


class CrossAttention(nn.Module):
    """Scaled dot-product cross-attention block with post-norm residuals.

    Queries/keys/values are LayerNorm + linear projections of their token sets; then
    ``z = LN(q + Attn)`` and ``out = LN(z + MLP(z))`` (the usual Transformer encoder layout the
    paper describes).

    Args:
        dim: Token width.
        n_heads: Attention heads.
        mlp_ratio: MLP hidden width / dim.
    """

    def __init__(self, dim: int, n_heads: int = 4, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim ({dim}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q, self.to_kv = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, q_tokens: Tensor, kv_tokens: Tensor, keep: Tensor | None = None) -> Tensor:
        """(N, Tq, D) queries attend to (N, Tk, D) keys/values -> (N, Tq, D).

        ``keep`` (N,) bool: rows marked False get no attention term at all (``z = LN(q)``), for
        rows whose key/value sequences are all absent.
        """
        n, tq, d = q_tokens.shape
        hd = d // self.n_heads
        q = self.to_q(self.norm_q(q_tokens)).view(n, tq, self.n_heads, hd).transpose(1, 2)
        k, v = self.to_kv(self.norm_kv(kv_tokens)).view(n, -1, 2, self.n_heads, hd).unbind(2)
        # SDPA picks a memory-efficient kernel: full attention maps of 4096 tokens per slice
        # would not fit otherwise.
        att = F.scaled_dot_product_attention(q, k.transpose(1, 2), v.transpose(1, 2))
        att = self.proj(att.transpose(1, 2).reshape(n, tq, d))
        if keep is not None:
            att = torch.where(keep[:, None, None], att, att.new_zeros(()))
        z = self.norm1(q_tokens + att)
        return self.norm2(z + self.mlp(z))


def _resolve(role: str, want: str | int, names: list[str], strict: bool) -> int | None:
    """Index of sequence ``want`` (a name, an alias of it, or an index) in ``names``."""
    if isinstance(want, int) and not isinstance(want, bool):
        if not -len(names) <= want < len(names):
            raise ValueError(f"AttLLSTM: {role} index {want} out of range for {len(names)} sequences")
        return want % len(names)
    key = str(want).strip().lower()
    for cand in (key, *ALIASES.get(key, ())):
        if cand in names:
            return names.index(cand)
    if strict:
        raise ValueError(f"AttLLSTM: {role} sequence {want!r} is not among the model's modalities {names}")
    return None


class AttLLSTM(ConfigMixin, nn.Module):
    """Per-slice cross-attention (DWI queries SWI + PHASE) -> Logic-LSTM across slices -> 1x1.

    Roles (MIDL 2024, section 2.2.1): the ``query`` sequence (default DWI) is patch-embedded with
    patch ``p1``; each ``keys`` sequence (default SWI, or its fallback T2*/SWAN, and PHASE) with
    patch ``p2``. The embedding on the coarser grid is resampled (bilinear) to the finer one; fixed
    sin/cos positions are added; one cross-attention block; the tokens are projected back to
    ``image_channels`` x patch x patch pixels (un-patchify), then a 7x7 conv with as many output as
    input channels and ELU. A full-resolution Logic-LSTM runs across slices and a 1x1 conv gives
    the logits.

    Availability (the paper had every sequence; here any may be absent):

    * Keys: the paper embeds the concatenated SWAN + PHASE with one convolution; here each key
      sequence has its own embedding and the per-location combination is an attention-gate fusion
      (as UpAttLLSTM's, :class:`AttentionGateFusion`) whose softmax runs over the keys available
      for that sample only, so an absent key gets weight exactly 0. A sample with no key available
      gets no attention term (the block reduces to its MLP on the query tokens).
    * Query: when the query sequence is absent (or not among the model's inputs), the first
      available key sequence (in ``keys`` order) fills the query channel; with no key either, the
      query channel is zeros.
    * Other sequences (with the standard order: ADC and FLAIR), ``extras``:
      ``"query"`` (default) concatenates them as further channels of the query embedding. The
      query stream is the "where to look" stream (the infarct guide), which is what ADC and FLAIR
      show too, while the keys/values stay the susceptibility sequences that carry the thrombus
      signal the attention copies to the output, as published. Absent extras are zero-filled (one
      convolution mixes them, so they cannot be masked separately). ``"keys"`` adds them as
      further gated key/value sequences (masked exactly); ``"ignore"`` leaves them unused (the
      published model, which saw only DWI, SWAN and PHASE).

    Args:
        n_modalities: Number of input sequences M (default ``len(modalities)``, else 4).
        n_classes: Output classes K.
        modalities: Names of the M input channels in order (the trainer passes its
            ``modalities``). Given, every role must resolve to one of them (ValueError otherwise).
            ``None``: the standard order :data:`STANDARD_ORDER` truncated to M is assumed, and
            roles that do not resolve are left out (the query then always falls back to a key).
        query: The query sequence, a name (or alias, :data:`ALIASES`) or a channel index.
        keys: The key/value sequences, names or indices.
        extras: What becomes of the other sequences: ``"query"``, ``"keys"`` or ``"ignore"``.
        p1, p2: Patch sizes of the query and key/value embeddings.
        embed_dim: Token width.
        n_heads: Attention heads.
        mlp_ratio: Transformer MLP width ratio.
        image_channels: Channels of the re-imaged attention output (LLSTM input).
        n_c, n_l, n_t, m, kernel_size: Logic-LSTM sizes.
        transfer_size: Slice size ``(H, W)`` (or one int) in input pixels that the Logic-LSTM's
            transfer windows are sized for, fixed: the training crop, so a whole slice at inference
            sees the windows the network learned; ``None``: each input's own size.
        double_pass, bidirectional: Logic-LSTM options.

    Weights of the earlier layout (the first channel queried a concatenation of all others) do not
    load into this one: ``load_state_dict`` raises a one-line ValueError naming the change.
    """

    def __init__(self, n_modalities: int | None = None, n_classes: int = 2,
                 modalities: Sequence[str] | None = None, query: str | int = "dwi",
                 keys: Sequence[str | int] = ("swi", "phase"), extras: str = "query",
                 p1: int = 4, p2: int = 8, embed_dim: int = 32, n_heads: int = 4,
                 mlp_ratio: float = 2.0, image_channels: int = 8, n_c: int = 4, n_l: int = 8,
                 n_t: int | None = None, m: int | None = None, kernel_size: int = 3,
                 double_pass: bool = True, bidirectional: bool = False,
                 transfer_size: int | Sequence[int] | None = None) -> None:
        super().__init__()
        self._store_config(locals())
        if extras not in EXTRAS:
            raise ValueError(f"AttLLSTM: extras must be one of {EXTRAS}, got {extras!r}")
        if isinstance(keys, (str, int)):
            keys = [keys]
        strict = modalities is not None
        if strict:
            names = [str(s).strip().lower() for s in modalities]
            if n_modalities is not None and n_modalities != len(names):
                raise ValueError(f"AttLLSTM: n_modalities={n_modalities} but {len(names)} modalities {names}")
            if len(set(names)) != len(names):
                raise ValueError(f"AttLLSTM: repeated sequence in modalities {names}")
        else:
            n = 4 if n_modalities is None else int(n_modalities)
            names = list(STANDARD_ORDER[:n]) + [f"seq{i}" for i in range(len(STANDARD_ORDER), n)]
        self.n_modalities, self.n_classes, self.modalities = len(names), n_classes, names
        q_idx = _resolve("query", query, names, strict)
        key_idx: list[int] = []
        for k in keys:
            i = _resolve("key", k, names, strict)
            if i is None or i in key_idx:
                continue
            if i == q_idx:
                raise ValueError(f"AttLLSTM: {names[i]!r} cannot be both the query and a key")
            key_idx.append(i)
        if not key_idx:
            raise ValueError(f"AttLLSTM: no key sequence among the model's modalities {names}")
        others = [i for i in range(len(names)) if i != q_idx and i not in key_idx]
        if extras == "keys":
            key_idx += others
        self.q_idx = q_idx
        self.key_idx = key_idx
        self.extra_idx = others if extras == "query" else []
        self.p1, self.p2 = p1, p2
        self.patch = min(p1, p2)
        self.multiple = p1 * p2 // math.gcd(p1, p2)
        self.embed_query = nn.Conv2d(1 + len(self.extra_idx), embed_dim, p1, stride=p1)
        self.embed_keys = nn.ModuleList(nn.Conv2d(1, embed_dim, p2, stride=p2) for _ in key_idx)
        self.key_fusion = AttentionGateFusion(embed_dim) if len(key_idx) > 1 else None
        self.attention = CrossAttention(embed_dim, n_heads, mlp_ratio)
        self.unpatch = nn.Linear(embed_dim, image_channels * self.patch ** 2)
        self.conv = nn.Sequential(nn.Conv2d(image_channels, image_channels, 7, padding=3),
                                  nn.ELU(inplace=True))
        self.llstm = LogicLSTM(image_channels, n_c, n_l, kernel_size, n_t=n_t, m=m,  # full resolution
                               double_pass=double_pass, bidirectional=bidirectional,
                               transfer_size=scaled_size(transfer_size, 1))
        self.head = nn.Conv2d(self.llstm.out_channels, n_classes, 1)

    @property
    def roles(self) -> dict:
        """Sequence names per role: ``{"query": name or None, "keys": [...], "extras": [...]}``."""
        return {"query": None if self.q_idx is None else self.modalities[self.q_idx],
                "keys": [self.modalities[i] for i in self.key_idx],
                "extras": [self.modalities[i] for i in self.extra_idx]}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        old = [k for k in _OLD_LAYOUT_KEYS if prefix + k in state_dict]
        if old:
            raise ValueError(
                "AttLLSTM weights of the earlier layout (first channel, SWI, queried all others) do not fit "
                "the published one (DWI queries SWI + PHASE, availability-aware): retrain this model")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _query_channels(self, z: Tensor, mask: Tensor) -> Tensor:
        """(N, 1 + extras, H, W): the query sequence, or the first available key where absent."""
        key_mask = mask[:, self.key_idx]
        first = key_mask.to(torch.uint8).argmax(dim=1)              # first available key (0 if none)
        keys = z[:, self.key_idx]
        fill = keys.gather(1, first.view(-1, 1, 1, 1).expand(-1, 1, *keys.shape[-2:]))
        if self.q_idx is None:
            slot = fill
        else:
            slot = torch.where(mask[:, self.q_idx, None, None, None], z[:, self.q_idx:self.q_idx + 1], fill)
        return torch.cat([slot, z[:, self.extra_idx]], dim=1) if self.extra_idx else slot

    def forward(self, x: Tensor, available: Tensor | None = None) -> Tensor:
        """Segment (B, M, S, H, W) given availability (B, M) -> logits (B, K, S, H, W)."""
        z, mask_n, (h, w) = padded_slices(x, available, self.n_modalities, self.multiple)  # mask_n: rows as z
        b, s = x.shape[0], x.shape[2]
        hp, wp = z.shape[-2:]
        key_mask = mask_n[:, self.key_idx]
        eq = self.embed_query(self._query_channels(z, mask_n))
        ek = [emb(z[:, i:i + 1]) for emb, i in zip(self.embed_keys, self.key_idx)]
        if self.key_fusion is not None:
            ekv, _ = self.key_fusion(ek, key_mask)                  # absent keys: weight exactly 0
        else:
            ekv = torch.where(key_mask[:, :1, None, None], ek[0], ek[0].new_zeros(()))
        gh, gw = hp // self.patch, wp // self.patch
        if eq.shape[-2:] != (gh, gw):
            eq = F.interpolate(eq, size=(gh, gw), mode="bilinear", align_corners=False)
        if ekv.shape[-2:] != (gh, gw):
            ekv = F.interpolate(ekv, size=(gh, gw), mode="bilinear", align_corners=False)
        pos = _sincos_2d(eq.shape[1], gh, gw, eq.device, eq.dtype)
        tq = eq.flatten(2).transpose(1, 2) + pos
        tkv = ekv.flatten(2).transpose(1, 2) + pos
        tokens = self.unpatch(self.attention(tq, tkv, keep=key_mask.any(dim=1)))  # (N, gh*gw, C*p*p)
        img = F.pixel_shuffle(tokens.transpose(1, 2).reshape(z.shape[0], -1, gh, gw), self.patch)
        img = self.conv(img)
        feats = self.llstm(img.view(b, s, *img.shape[1:])).flatten(0, 1)
        logits = self.head(feats)[..., :h, :w]
        return batch_to_slices(logits, b)
