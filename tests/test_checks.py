"""Bad arguments at the public boundary fail before any branch runs, naming what was given and what was
expected: ``routed_attention`` and the raw custom ops."""
import pytest
import torch

from comfyui_vorta.vorta.config import VortaConfig
from comfyui_vorta.vorta.geometry import TokenGrid
from comfyui_vorta.vorta.routing import REFERENCE_BRANCHES, AttentionProblem, head_groups, routed_attention

DEV = "cuda" if torch.cuda.is_available() else "cpu"
G = TokenGrid(2, 3, 4)
H, D, B, T = 3, 16, 2, 4
S = G.numel + T


def qkv(dtype=torch.float32, seq=S, heads=H, dim=D):
    return [torch.randn(B, seq, heads * dim, device=DEV, dtype=dtype) for _ in range(3)]


def problem(**kw):
    return AttentionProblem(G, VortaConfig(tile=(1, 2, 2), bucket=(2, 3, 2)), kv_from="key", text_len=T, **kw)


def branches():
    out = [pytest.param(REFERENCE_BRANCHES, id="torch")]
    try:
        from comfyui_vorta.vorta.kernels.launch import TRITON_BRANCHES

        out.append(pytest.param(TRITON_BRANCHES, id="triton"))
    except ImportError:  # pragma: no cover
        pass
    return out


def groups(*lists):
    return [torch.tensor(x, dtype=torch.long, device=DEV) for x in lists]


# (what, call arguments changed, message fragment)
BAD_CALLS = [
    ("decisions shorter than the heads", dict(decisions=torch.tensor([1, 2])), "2 decisions for 3 heads"),
    ("decisions longer than the heads", dict(decisions=torch.tensor([1, 2, 0, 0])), "4 decisions for 3 heads"),
    ("a branch that does not exist", dict(decisions=torch.tensor([1, 3, 0])), "integers in [0, 3)"),
    ("float decisions", dict(decisions=torch.tensor([1.0, 2.0, 0.0])), "integers in [0, 3)"),
    ("groups missing a head", dict(decisions=groups([0], [1], [])), "name 2 heads, expected each of the 3"),
    ("groups naming a head twice", dict(decisions=groups([0, 1], [1], [])), "exactly once"),
    ("groups with a head out of range", dict(decisions=groups([0, 1], [3], [])), "exactly once"),
    ("two groups", dict(decisions=groups([0, 1], [2])), "one per branch (3)"),
    ("text_valid of the wrong shape", dict(text_valid=torch.tensor([4])), "text_valid must be a (2,) integer tensor"),
    ("text_valid as floats", dict(text_valid=torch.tensor([4.0, 4.0])), "integer tensor"),
    ("text_valid above the text length", dict(text_valid=torch.tensor([5, 1])), "text_valid must be in [0, 4]"),
    ("negative text_valid", dict(text_valid=torch.tensor([-1, 1])), "text_valid must be in [0, 4]"),
    ("sequence shorter than grid + text", dict(seq=S - 1), "attention over 27 tokens but the problem has 28"),
    ("k in another dtype", dict(k_dtype=torch.float16), "same shape, dtype and device"),
]


@pytest.mark.parametrize("what,change,message", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
@pytest.mark.parametrize("impl", branches())
def test_routed_attention_refuses(impl, what, change, message):
    q, k, v = qkv(seq=change.get("seq", S))
    if "k_dtype" in change:
        k = k.to(change["k_dtype"])
    p = problem(text_valid=change.get("text_valid", torch.tensor([4, 2])))
    decisions = change.get("decisions", torch.tensor([1, 2, 0]))
    with pytest.raises(ValueError) as e:
        routed_attention(q, k, v, H, decisions, p, branches=impl)
    assert message in str(e.value), str(e.value)


def test_unsupported_head_dim_is_refused_by_the_kernels_only():
    pytest.importorskip("triton")
    from comfyui_vorta.vorta.kernels.launch import TRITON_BRANCHES

    q, k, v = qkv(dim=80)
    p = problem()
    with pytest.raises(ValueError, match="head dim 80 is not supported by the triton coreset/sliding branches"):
        routed_attention(q, k, v, H, torch.tensor([1, 2, 0]), p, branches=TRITON_BRANCHES)
    routed_attention(q, k, v, H, torch.tensor([0, 0, 0]), p, branches=TRITON_BRANCHES)  # full heads: any dim
    out = routed_attention(q, k, v, H, torch.tensor([1, 2, 0]), p)  # the reference runs any head dim
    assert torch.isfinite(out).all()


def test_checked_head_groups_are_trusted_and_layouts_checked():
    q, k, v = qkv()
    p = problem()
    g = head_groups(torch.tensor([1, 2, 0]), DEV)
    assert g.num_heads == H
    routed_attention(q, k, v, H, g, p)
    with pytest.raises(ValueError, match="expects \\[B, L, H\\*D\\] with H\\*D divisible by 5 heads"):
        routed_attention(q, k, v, 5, torch.tensor([0] * 5), p)
    with pytest.raises(ValueError, match="expects \\[B, H=3, L, D\\]"):
        routed_attention(q, k, v, H, g, p, layout="hunyuan")
    with pytest.raises(ValueError, match="kv_from"):
        AttentionProblem(G, VortaConfig(), kv_from="value")


def op_call(op_name, **change):
    """Arguments of a raw custom op call on [B, S, H, D] tensors, with ``change`` applied."""
    dim = change.pop("dim", 32)
    seq = change.pop("seq", S)
    q, k, v = (torch.randn(B, seq, H, dim, device=DEV) for _ in range(3))
    args = dict(q=q, k=k, v=v, heads=torch.tensor([0, 2], dtype=torch.int32, device=DEV),
                out=torch.empty(B, seq, H, dim, device=DEV), grid=list(G.shape), text_len=T,
                text_valid=torch.tensor([4, 1]))
    if op_name == "sliding":
        args.update(tile=[1, 2, 2], window=[3, 3, 3])
    else:
        args.update(bucket=[2, 3, 2], ratio=0.5, kv_from_key=True)
    args.update(change)
    return args


BAD_OPS = [
    ("sequence length", dict(seq=S + 1), "attention over 29 tokens but the problem has 28"),
    ("head dim", dict(dim=96), "head dim 96 is not supported"),
    ("head index out of range", dict(heads=torch.tensor([0, 3], dtype=torch.int32)), "distinct and in [0, 3)"),
    ("head index twice", dict(heads=torch.tensor([1, 1], dtype=torch.int32)), "distinct and in [0, 3)"),
    ("head list 2-D", dict(heads=torch.tensor([[0, 1]], dtype=torch.int32)), "1-D int32/int64"),
    ("text_valid too large", dict(text_valid=torch.tensor([5, 1])), "text_valid must be in [0, 4]"),
    ("text_valid shape", dict(text_valid=torch.tensor([4, 1, 1])), "text_valid must be a (2,) integer tensor"),
    ("out shape", dict(out=torch.empty(B, S, H + 1, 32)), "out must be"),
]


@pytest.mark.parametrize("what,change,message", BAD_OPS, ids=[c[0] for c in BAD_OPS])
@pytest.mark.parametrize("op_name", ["sliding", "coreset"])
def test_custom_ops_refuse(op_name, what, change, message):
    pytest.importorskip("triton")
    from comfyui_vorta.vorta.kernels.launch import coreset_op, sliding_tile_op

    change = {key: (val.to(DEV) if isinstance(val, torch.Tensor) and key != "text_valid" else val)
              for key, val in change.items()}
    args = op_call(op_name, **change)
    with pytest.raises(ValueError) as e:
        (sliding_tile_op if op_name == "sliding" else coreset_op)(**args)
    assert message in str(e.value), str(e.value)
