import torch

from comfyui_vorta.vorta.config import CORESET, FULL, SLIDING
from comfyui_vorta.vorta.router import Router, hard_decisions, make_random_routers, official_layer_names, router_input


def test_router_module_layout_and_branch_order():
    r = Router(dim=8, heads=2)
    with torch.no_grad():
        r.linear.weight.zero_()
        r.linear.bias.copy_(torch.tensor([0, 5, 0, 0, 0, 5.0]))  # row h*3+e: head0 -> coreset, head1 -> sliding
    p = r(torch.randn(3, 8))
    assert p.shape == (3, 2, 3)
    assert torch.allclose(p.sum(-1), torch.ones(3, 2))
    assert hard_decisions(p, 0.3).tolist() == [CORESET, SLIDING]


def test_decisions_use_batch_element_zero_and_tau_fallback():
    """Batch element 0 decides (element 1 would say full / sliding); below tau a head falls back to full, which
    differs from its arg-max (coreset 0.5, sliding 0.4), so the fallback is seen, not the arg-max."""
    probs = torch.tensor([[[0.2, 0.5, 0.3], [0.3, 0.3, 0.4]], [[0.9, 0.05, 0.05], [0.0, 0.0, 1.0]]])
    assert hard_decisions(probs, 0.3).tolist() == [CORESET, SLIDING]
    assert hard_decisions(probs, 0.45).tolist() == [CORESET, FULL]  # 0.4 < 0.45: the sliding head falls back
    assert hard_decisions(probs, 0.6).tolist() == [FULL, FULL]  # 0.5 < 0.6 falls back too
    assert hard_decisions(probs, 0.4).tolist() == [CORESET, SLIDING]  # at tau itself: no fallback


def test_router_set_equals_per_layer_modules_in_bf16():
    rs = make_random_routers("hunyuan", official_layer_names("hunyuan", double=2, single=3), dim=64, heads=4, seed=1)
    temb = torch.randn(2, 64)
    probs = rs.probabilities(temb)
    assert probs.shape == (5, 2, 4, 3) and probs.dtype == torch.bfloat16
    for i in range(5):
        assert torch.equal(rs.router(i)(temb), probs[i])
    assert rs.decide(temb).shape == (5, 4)


def test_routing_depends_only_on_timestep():
    """One timestep, one (layers, heads) decision table: batch element 0 decides, whatever the batch holds."""
    rs = make_random_routers("wan", official_layer_names("wan", 3), dim=32, heads=6, seed=2, dtype=torch.float32)
    mlp = torch.nn.Sequential(torch.nn.Linear(256, 32), torch.nn.SiLU(), torch.nn.Linear(32, 32))
    alone = rs.decide(router_input("wan", mlp, torch.tensor([500.0])))
    assert alone.shape == (3, 6)
    assert torch.equal(alone, rs.decide(router_input("wan", mlp, torch.tensor([500.0, 999.0]))))
    assert not torch.equal(alone, rs.decide(router_input("wan", mlp, torch.tensor([10.0]))))
