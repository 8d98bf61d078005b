import os, sys, torch
from comfyui_vorta.vorta.config import VortaConfig
from comfyui_vorta.vorta.geometry import TokenGrid
from comfyui_vorta.vorta.routing import AttentionProblem
from comfyui_vorta.vorta.kernels.launch import triton_sliding
grid, tile = tuple(map(int, sys.argv[1].split('x'))), tuple(map(int, sys.argv[2].split('x')))
D = int(sys.argv[3]); T = int(sys.argv[4])
B,H=2,3
S = TokenGrid(*grid).numel + T
q, k, v = (torch.randn(B, S, H, D, device='cuda', dtype=torch.bfloat16) for _ in range(3))
p = AttentionProblem(TokenGrid(*grid), VortaConfig(tile=tile), text_len=T)
out = torch.full_like(q, float('nan'))
heads = torch.arange(H, device='cuda')
triton_sliding(q, k, v, heads, out, p, quant=True)
torch.cuda.synchronize()
ref = torch.full_like(q, float('nan')); triton_sliding(q, k, v, heads, ref, p); torch.cuda.synchronize()
print('OK', os.environ.get('VORTA_STA_CONFIG'), sys.argv[1:], float((out.float()-ref.float()).norm()/ref.float().norm()))
