"""Independent brute-force implementations for the tests: explicit masks and per-bucket loops on small
grids, written from the spec without using vorta.geometry."""
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
    """softmax with an explicit (..., Lq, Lk) bool mask, fp64; rows with no visible key give 0."""
    s = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~mask, float("-inf"))
    p = torch.softmax(s, -1).nan_to_num(0.0)
    return p @ v.double()


def with_text_mask(video_mask, T, valid):
    """Extend a video (L, L) mask to [video; text] for one batch element with `valid` valid text tokens."""
    L = video_mask.shape[0]
    S = L + T
    m = torch.zeros(S, S, dtype=torch.bool)
    m[:L, :L] = video_mask
    m[:, L:L + valid] = True  # valid text is seen by everyone
    m[L:L + valid, :L] = True  # valid text sees all video
    m[L + valid:, :] = False  # padded text queries see nothing -> 0
    return m


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
        sims.sort(key=lambda s: s[0])  # ascending: least similar first (stable)
        kept.add(c)
        for _, t in sims[:k]:
            kept.add(t)
        for _, t in sims[k:]:
            owner[t] = c
    return kept, owner


def coreset_brute(q, k, v, F, H, W, bucket, ratio, kv_from, T=0, valid=None):
    """(B, h, S, D) fp64 coreset attention via explicit keep masks, per batch and head."""
    B, h, S, D = q.shape
    L = F * H * W
    bk = buckets(F, H, W, bucket)
    out = torch.zeros(B, h, S, D, dtype=torch.float64)
    for b in range(B):
        nv = T if valid is None else int(valid[b])
        for hh in range(h):
            kept_q, owner = select(q[b, hh, :L], bk, ratio)
            kept_k = kept_q if kv_from == "query" else select(k[b, hh, :L], bk, ratio)[0]
            qmask = torch.zeros(S, dtype=torch.bool)
            kmask = torch.zeros(S, dtype=torch.bool)
            qmask[list(kept_q)] = True
            kmask[list(kept_k)] = True
            kmask[L:L + nv] = True
            qmask[L:L + nv] = True
            mask = qmask[:, None] & kmask[None, :]
            o = masked_attention(q[b, hh], k[b, hh], v[b, hh], mask)
            for t, c in owner.items():
                o[t] = o[c]
            out[b, hh] = o
    return out
