"""The node layer's rules without ComfyUI: dense-block lists, settings, percent window, schedule, preview, summary."""
import pytest
import torch

from comfyui_vorta.vorta.comfy import heatmap, settings as S
from comfyui_vorta.vorta.comfy.options import build_settings
from comfyui_vorta.vorta.comfy.override import text_valid_from_mask
from comfyui_vorta.vorta.comfy.stats import RunStats
from comfyui_vorta.vorta.config import CORESET, FULL, PRESETS, SLIDING, VortaConfig


def test_parse_dense_blocks():
    assert S.parse_dense_blocks("0,1,38-39") == {0, 1, 38, 39}
    assert S.parse_dense_blocks(" 3 - 5 ; 7 ") == {3, 4, 5, 7}
    assert S.parse_dense_blocks("") == frozenset()
    assert S.format_blocks(S.parse_dense_blocks("0,1,2,5,7-8")) == "0-2,5,7-8"
    with pytest.raises(ValueError, match="cannot read 'a'"):
        S.parse_dense_blocks("1,a")
    with pytest.raises(ValueError, match="backwards"):
        S.parse_dense_blocks("5-3")
    with pytest.raises(ValueError, match=r"\[40\] do not exist"):
        S.parse_dense_blocks("0,40", num_layers=40)


def test_build_settings_presets_and_custom():
    s = build_settings(preset="custom", tile_t=4, tile_h=6, tile_w=8, window_t=1, bucket_t=1, ratio=0.25, tau_sparse=0.4)
    assert s.config == VortaConfig(tile=(4, 6, 8), window=(1, 3, 3), bucket=(1, 3, 2), ratio=0.25)
    assert s.tau_sparse == 0.4  # routing, not geometry: one copy, on Settings
    assert build_settings(preset="auto").config is None
    assert build_settings(preset="hunyuan-720p").config.tile == PRESETS["hunyuan-720p"].config.tile
    with pytest.raises(ValueError, match="preset: 'nope' is not one of auto, custom"):
        build_settings(preset="nope")
    with pytest.raises(ValueError, match="mode: 'fast' is not one of auto, router"):
        build_settings(mode="fast")
    with pytest.raises(ValueError, match="before start_percent"):
        build_settings(start_percent=0.6, end_percent=0.4)
    with pytest.raises(ValueError, match=r"tile_t must be in \[1, 64\]"):
        build_settings(tile_t=0)
    with pytest.raises(ValueError, match="unknown VORTA setting tile"):
        build_settings(tile=(1, 2, 2))


def test_mode_auto_is_the_router_when_connected_else_the_schedule():
    s = build_settings()
    assert s.mode == "auto"
    assert s.resolved(has_router=True).mode == "router" and s.resolved(has_router=False).mode == "schedule"
    assert "mode=auto->router" in S.describe(s.resolved(True))
    assert build_settings(mode="full").resolved(has_router=True).mode == "full"  # explicit modes stay


def test_resolve_geometry_order_and_source():
    grid = S.TokenGrid(21, 30, 52)
    trained = VortaConfig(tile=(6, 9, 8))
    router = build_settings().resolved(True)
    assert S.resolve_geometry(router, "wan", grid, 5120, trained) == (trained, "router training settings")
    g = S.resolve_geometry(build_settings(mode="schedule"), "wan", grid, 1536, trained)
    assert g == (PRESETS["wan2.1-1.3b-480p"].config, "preset wan2.1-1.3b-480p")
    assert S.describe_geometry(g) == "preset wan2.1-1.3b-480p: tile 4x6x8 window 3x3x3 bucket 2x3x2 ratio 0.5"
    custom = S.resolve_geometry(build_settings(preset="custom", tile_t=2), "wan", grid, 1536, trained)
    assert custom.config.tile[0] == 2 and custom.source == "custom"


def flow(p):  # ModelSamplingDiscreteFlow.percent_to_sigma with shift 1
    return 1.0 if p <= 0 else (0.0 if p >= 1 else 1.0 - p)


def test_percent_window_and_schedule():
    s = build_settings(mode="schedule", start_percent=0.1, end_percent=0.9, switch_percent=0.5, dense_blocks="2")
    w = S.SigmaWindow.from_percents(flow, s)
    assert not w.active(0.95) and w.active(0.9) and w.active(0.2) and not w.active(0.05)
    assert S.step_branch(s, w, 0.95) == FULL
    assert S.step_branch(s, w, 0.7) == CORESET
    assert S.step_branch(s, w, 0.3) == SLIDING
    d = S.step_decisions(s, w, 0.3, num_layers=4, heads=3)
    assert d.shape == (4, 3) and (d[2] == FULL).all() and (d[[0, 1, 3]] == SLIDING).all()
    # end_percent = 1: never dense at the end, even at sigma 0
    w1 = S.SigmaWindow.from_percents(flow, build_settings(mode="sliding"))
    assert w1.active(1.0) and w1.active(0.0)


def test_router_decisions_pass_through_with_dense_blocks():
    s = build_settings(mode="router", dense_blocks="1")
    w = S.SigmaWindow.from_percents(flow, s)
    router = torch.tensor([[1, 2], [2, 2], [0, 1]])
    d = S.step_decisions(s, w, 0.5, 3, 2, router)
    assert d.tolist() == [[1, 2], [0, 0], [0, 1]]
    with pytest.raises(ValueError):
        S.step_decisions(s, w, 0.5, 3, 2, None)
    forced = S.step_decisions(build_settings(mode="coreset"), w, 0.5, 3, 2, router)
    assert (forced == CORESET).all()


def _px(img, y, x):
    return tuple((img[0, y, x] * 255).round().int().tolist())


def test_heat_map_small_table_one_column_per_head():
    table = torch.tensor([[[0, 1], [2, 2]], [[1, 1], [0, 2]], [[2, 2], [2, 2]]])
    img = heatmap.render_table(table, [(0, "double"), (1, "single")])
    assert img.ndim == 4 and img.shape[0] == 1 and img.shape[-1] == 3 and img.dtype == torch.float32
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    lay = heatmap.layout(3, 2, 2, groups=True)
    assert lay.per_head and lay.layer_px // 2 >= heatmap.MIN_HEAD_PX
    y, x = lay.top + lay.row_px // 2, lay.left
    assert _px(img, y, x) == heatmap.COLORS[0] and _px(img, y, x + lay.layer_px // 2) == heatmap.COLORS[1]
    assert _px(img, y + lay.row_px, x + lay.layer_px + 1) == heatmap.COLORS[0]  # step 2, layer 1, head 0
    text = heatmap.table_summary(table, 0.42, "hdr")
    assert text.splitlines()[0] == "hdr" and "sliding 58.3%" in text and "42.0% saved" in text and "step 2:" in text


def test_heat_map_of_a_real_model_aggregates_heads_per_layer_and_labels_its_axes():
    """Wan-14B: 40 layers x 40 heads would be 1,600 one-pixel columns; each layer becomes one column split into its
    branch shares, the image stays about 1,000 px wide, and the ticks and legend are drawn in large text."""
    table = torch.full((50, 40, 40), 2)
    table[:, 3, :10] = 0  # layer 3: a quarter full, the rest sliding
    table[0] = 1
    img = heatmap.render_table(table)
    lay = heatmap.layout(50, 40, 40)
    assert not lay.per_head and lay.layer_px >= 2 * 3 and img.shape[2] <= 1024
    y = lay.top + lay.row_px + lay.row_px // 2  # step 2
    x3 = lay.left + 3 * (lay.layer_px + 1)
    assert _px(img, y, x3) == heatmap.COLORS[0] and _px(img, y, x3 + lay.layer_px - 1) == heatmap.COLORS[2]
    assert _px(img, lay.top, x3 + lay.layer_px - 1) == heatmap.COLORS[1]  # step 1: all coreset
    grid_bottom = lay.top + 50 * lay.row_px
    below = img[0, grid_bottom:] * 255
    light = ((below - torch.tensor(heatmap.TEXT)).abs().sum(-1) < 30).sum()
    assert light > 500, "legend text missing"
    assert lay.font_px >= 20  # ~10 px or more at the node's usual half-size display
    assert heatmap._ticks(50, lay.row_px, lay.font_px + 4)[::len(heatmap._ticks(50, lay.row_px, 26)) - 1] == [0, 49]
    assert heatmap._ticks(40, lay.layer_px + 1, 2.2 * lay.font_px)[:2] == [0, 5]


def test_run_stats_summary_logs_each_fallback_once(caplog):
    st = RunStats()
    st.model_calls = 2
    st.add_call([1, 1, 2], {"full": 4.0, "coreset": 1.0, "sliding": 1.0, "dense": 16.0})
    with caplog.at_level("WARNING", logger="vorta"):
        st.add_fallback("extra reference tokens", heads=4, dense_flops=16.0)
        st.add_fallback("extra reference tokens", heads=4, dense_flops=16.0)
    assert sum("extra reference tokens" in r.message for r in caplog.records) == 1
    line = st.summary()
    assert "heads full" in line and "(x2)" in line and "FLOPs saved" in line and "\n" not in line
    st.skipped_calls = 3  # calls a cache beneath VORTA's wrapper answered: named, never counted as run
    assert "in 2 model calls (3 more skipped by a cache)" in st.summary()
    st.reset()
    assert "no self-attention call" in st.summary()
    st.skipped_calls = 3
    assert "in 3 model calls" in st.summary()


@pytest.mark.parametrize("text_first", [False, True], ids=["video-text", "text-video"])
def test_text_valid_from_additive_mask(text_first):
    from comfyui_vorta.vorta.geometry import TokenGrid
    from comfyui_vorta.vorta.routing import AttentionProblem

    p = AttentionProblem(TokenGrid(1, 2, 3), VortaConfig(), text_len=4, text_first=text_first)
    L, T = 6, 4
    text0 = 0 if text_first else L  # where the text span starts, written out independently of the code
    m = torch.zeros(1, 1, L + T)
    assert text_valid_from_mask(m, 2, p) == (None, None)
    m[..., text0 + 3:text0 + T] = -torch.finfo(torch.float32).max
    valid, why = text_valid_from_mask(m, 2, p)
    assert why is None and valid.tolist() == [3, 3]
    bad = torch.zeros(1, 1, L + T)
    bad[..., text0 + 1] = -1e30
    assert "not at the end" in text_valid_from_mask(bad, 1, p)[1]
    hides = torch.zeros(1, 1, L + T)
    hides[..., (T if text_first else 0)] = -1e30
    assert "hides video" in text_valid_from_mask(hides, 1, p)[1]
    assert "per-key" in text_valid_from_mask(torch.zeros(1, 1, 3, L + T), 1, p)[1]


def test_model_file_in_prompt_follows_model_links_to_the_loader():
    from comfyui_vorta.vorta.comfy.run_info import model_file_in_prompt

    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan/wan2.1_t2v_1.3B_fp16.safetensors"}},
        "2": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": "x.safetensors"}},
        "3": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["2", 0], "shift": 8.0}},
        "9": {"class_type": "VortaCalibrateRouter", "inputs": {"model": ["3", 0]}},
        "20": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "hunyuan.safetensors"}},
        "21": {"class_type": "VortaCalibrateRouter", "inputs": {"model": [20, 0]}},  # int ids as some clients send
        "30": {"class_type": "A", "inputs": {"model": ["31", 0]}},
        "31": {"class_type": "B", "inputs": {"model": ["30", 0]}},  # a cycle: no loader
        "32": {"class_type": "VortaCalibrateRouter", "inputs": {"model": ["30", 0]}},
        "40": {"class_type": "DiffusionModelLoaderKJ", "inputs": {"model_name": "kj/wan_14b.safetensors"}},
        "41": {"class_type": "SomePatch", "inputs": {"model": ["40", 0], "model_name": "not_the_model.pth"}},
        "42": {"class_type": "VortaCalibrateRouter", "inputs": {"model": ["41", 0]}},
    }
    assert model_file_in_prompt(prompt, "9") == "wan2.1_t2v_1.3B_fp16.safetensors"
    assert model_file_in_prompt(prompt, 21) == "hunyuan.safetensors"
    assert model_file_in_prompt(prompt, "32") == ""
    assert model_file_in_prompt(prompt, "42") == "wan_14b.safetensors"  # model_name read only on a source node
    assert model_file_in_prompt(None, None) == "" and model_file_in_prompt(prompt, "404") == ""
