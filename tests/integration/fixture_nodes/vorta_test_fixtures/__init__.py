"""Test-only ComfyUI node pack: CONDITIONING with the real shapes and conventions of Wan / HunyuanVideo text
encoders (which are not available offline).  Used by the headless server test; never shipped with the pack."""
import torch


class VortaTestConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "family": (["wan", "hunyuan"], {"tooltip": "wan: umt5 [1, 512, 4096] zero-padded; hunyuan: [1, N, 4096] + pooled"}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
            "tokens": ("INT", {"default": 16, "min": 1, "max": 512}),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, family, seed, tokens):
        g = torch.Generator().manual_seed(seed)
        if family == "wan":
            c = torch.zeros(1, 512, 4096)
            c[:, :tokens] = torch.randn(1, tokens, 4096, generator=g)
            return ([[c, {}]],)
        return ([[torch.randn(1, tokens, 4096, generator=g),
                  {"pooled_output": torch.randn(1, 768, generator=g), "guidance": 6.0}]],)


NODE_CLASS_MAPPINGS = {"VortaTestConditioning": VortaTestConditioning}
