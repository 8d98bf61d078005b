"""Independent brute-force implementations for the tests: explicit masks and per-bucket loops on small
grids, written from the spec without using vorta.geometry.

Token positions: the sequence is [video (raster order), text] or, with ``text_first``, [text, video]; every
mask here is built from the role of each sequence row (``row_roles``), never by moving data.  Non-finite
inputs: a key a query does not see takes no part in its sum (not even as 0 * NaN); coreset margins are
ordered by (similarity, slot) with a NaN similarity after every number (the documented tie rule)."""
import math

import torch


def raster_coords(F, H, W):
    return [(f, y, x) for f in range(F) for y in range(H) for x in range(W)]


def sliding_mask(F, H, W, tile, window):
    """(L, L) bool: query token i may see key token j (spec §4.2 rule with ceil tile counts)."""
    coords = raster_coords(F, H, W)
    n = [math.ceil(s / t) for s, t in zip((F, H, W), tile)]
    L = len(coords)
    m = torch.zeros(L, L, dtype=torch.bool)
    for i, ci in enumerate(coords):
        centers = []
        for ax in range(3):
            a = ci[ax] // tile[ax]
            r = window[ax] // 2
            lo, hi = r, n[ax] - 1 - r
            c = hi if lo > hi else min(max(a, lo), hi)
            centers.append(c)
        for j, cj in enumerate(coords):
            m[i, j] = all(abs(centers[ax] - cj[ax] // tile[ax]) <= window[ax] // 2 for ax in range(3))
    return m


def masked_attention(q, k, v, mask):
    """softmax with an explicit (..., Lq, Lk) bool mask, fp64, summed over the visible keys only (keys a query
    does not see take no part, their data may be NaN/inf); a query whose visible scores are all -inf weighs
    each visible key 0 (0 * V), one with no visible key gives 0."""
    q, k, v = q.double(), k.double(), v.double()
    mask = mask.expand(*q.shape[:-2], q.shape[-2], k.shape[-2])
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    s = torch.where(mask, s, float("-inf"))
    dead = (s == float("-inf")).all(-1, keepdim=True)
    p = torch.where(mask & ~dead, torch.softmax(s, -1), 0.0)
    if bool(torch.isfinite(v).all()):  # 0 * finite = 0: a plain product is exact
        return p @ v
    return torch.where(mask[..., None], p[..., None] * v[..., None, :, :], 0.0).sum(-2)


def row_roles(L, T, text_first=False):
    """('video', raster index) or ('text', text index) for each sequence row."""
    video = [("video", r) for r in range(L)]
    text = [("text", j) for j in range(T)]
    return text + video if text_first else video + text


def with_text_mask(video_mask, T, valid, text_first=False):
    """Extend a video (L, L) mask to the whole sequence for one batch element with `valid` valid text tokens:
    valid text sees and is seen by everyone; padded text is no key and its query sees nothing (-> 0)."""
    L = video_mask.shape[0]
    roles = row_roles(L, T, text_first)
    is_text = torch.tensor([a == "text" for a, _ in roles])
    idx = torch.tensor([i for _, i in roles])
    video_idx = torch.where(is_text, 0, idx)
    live_text = is_text & (idx < valid)
    video_pair = video_mask[video_idx[:, None], video_idx[None, :]] & ~is_text[:, None] & ~is_text[None, :]
    m = video_pair | live_text[None, :] | (live_text[:, None] & ~is_text[None, :])
    return m & ~(is_text & ~live_text)[:, None]  # padded text queries see nothing


def buckets(F, H, W, bucket):
    """List of buckets; each a list of raster indices in local raster order, with its extent."""
    out = []
    for f0 in range(0, F, bucket[0]):
        for y0 in range(0, H, bucket[1]):
            for x0 in range(0, W, bucket[2]):
                ext = (min(bucket[0], F - f0), min(bucket[1], H - y0), min(bucket[2], W - x0))
                toks = [((f0 + a) * H + (y0 + b)) * W + (x0 + c)
                        for a in range(ext[0]) for b in range(ext[1]) for c in range(ext[2])]
                center_local = ((ext[0] // 2) * ext[1] + ext[1] // 2) * ext[2] + ext[2] // 2
                out.append((toks, toks[center_local]))
    return out


def select(x, bkts, ratio):
    """For one (L, D) head: set of kept token indices and pruned-token -> center map."""
    kept, owner = set(), {}
    for toks, c in bkts:
        m = len(toks)
        k = max(0, min(m - 1, int(m * (1 - ratio)) - 1))
        xc = x[c].double() / x[c].double().norm().clamp_min(1e-12)
        sims = []
        for t in toks:
            if t == c:
                continue
            xt = x[t].double() / x[t].double().norm().clamp_min(1e-12)
            sims.append((float(xc @ xt), t))
        # ascending: least similar first; a NaN similarity after every number; ties keep slot order (stable)
        sims.sort(key=lambda s: (math.isnan(s[0]), 0.0 if math.isnan(s[0]) else s[0]))
        kept.add(c)
        for _, t in sims[:k]:
            kept.add(t)
        for _, t in sims[k:]:
            owner[t] = c
    return kept, owner


def coreset_brute(q, k, v, F, H, W, bucket, ratio, kv_from, T=0, valid=None, text_first=False):
    """(B, h, S, D) fp64 coreset attention via explicit keep masks, per batch and head."""
    B, h, S, D = q.shape
    L = F * H * W
    roles = row_roles(L, T, text_first)
    row_of = {role: i for i, role in enumerate(roles)}
    video_rows = [row_of[("video", r)] for r in range(L)]
    bk = buckets(F, H, W, bucket)
    out = torch.zeros(B, h, S, D, dtype=torch.float64)
    for b in range(B):
        nv = T if valid is None else int(valid[b])
        live_text = [row_of[("text", j)] for j in range(nv)]
        for hh in range(h):
            kept_q, owner = select(q[b, hh, video_rows], bk, ratio)
            kept_k = kept_q if kv_from == "query" else select(k[b, hh, video_rows], bk, ratio)[0]
            qmask = torch.zeros(S, dtype=torch.bool)
            kmask = torch.zeros(S, dtype=torch.bool)
            qmask[[row_of[("video", r)] for r in kept_q]] = True
            kmask[[row_of[("video", r)] for r in kept_k]] = True
            kmask[live_text] = True
            qmask[live_text] = True
            mask = qmask[:, None] & kmask[None, :]
            o = masked_attention(q[b, hh], k[b, hh], v[b, hh], mask)
            for t, c in owner.items():
                o[row_of[("video", t)]] = o[row_of[("video", c)]]
            out[b, hh] = o
    return out
