"""The VORTA engine in plain PyTorch: geometry, reference branches, routers, routed attention.

Only ``vorta/comfy`` (the ComfyUI adapter) imports ``comfy.*``; everything else runs anywhere.
"""
