"""FlexAttention baseline for the sliding branch: the equivalent block mask on the padded tiled layout, with the
permutes into and out of it included (what the official code runs)."""
from __future__ import annotations

import torch

from comfyui_vorta.vorta.geometry import TileLayout, TokenGrid
from comfyui_vorta.vorta.routing import sequence_rows

from .shapes import Shape


def flex_sliding(s: Shape, q, k, v):
    """A callable computing sliding tile attention of [B, H, S, D] q/k/v with FlexAttention (video + text, text
    before or after the video as in the shape)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    g = TokenGrid(*s.grid)
    layout = TileLayout(g, s.tile)
    nf, nh, nw = layout.tile_grid
    P = layout.tile_tokens
    idx = layout.tile_token_index().flatten().to(q.device)  # padded tiled slot -> raster or -1
    n_slots = idx.numel()
    L, T, tv = g.numel, s.text, s.valid_text
    video_row0, text_row0 = sequence_rows(L, T, s.text_first)
    dev = q.device
    slot_valid = torch.cat([idx >= 0, torch.arange(T, device=dev) < tv])
    # sequence row of each slot of the flex layout [tiled video slots, text]
    gather = torch.cat([video_row0 + torch.where(idx >= 0, idx, 0), text_row0 + torch.arange(T, device=dev)])
    live_rows = gather[:n_slots][idx >= 0]

    def tile_coords(i):
        t = i // P
        return t // (nh * nw), (t // nw) % nh, t % nw

    def mask_mod(b, h, qi, ki):
        q_text = qi >= n_slots
        k_text = ki >= n_slots
        qa, qb, qc = tile_coords(qi)
        ka, kb, kc = tile_coords(ki)
        ca = torch.clamp(qa, 1, nf - 2)
        cb = torch.clamp(qb, 1, nh - 2)
        cc = torch.clamp(qc, 1, nw - 2)
        win = ((ca - ka).abs() <= 1) & ((cb - kb).abs() <= 1) & ((cc - kc).abs() <= 1)
        ok = slot_valid[ki] & slot_valid[qi]
        return ok & (win & ~q_text & ~k_text | k_text | q_text)

    S = n_slots + T
    bm = create_block_mask(mask_mod, B=None, H=None, Q_LEN=S, KV_LEN=S, device=dev, _compile=True)
    flex = torch.compile(flex_attention, dynamic=False)

    def run():
        qt, kt, vt = (x[:, :, gather] for x in (q, k, v))
        o = flex(qt, kt, vt, block_mask=bm)
        out = torch.empty_like(q)
        out[:, :, live_rows] = o[:, :, :n_slots][:, :, idx >= 0]
        if T:
            out[:, :, text_row0:text_row0 + T] = o[:, :, n_slots:]
        return out

    return run
