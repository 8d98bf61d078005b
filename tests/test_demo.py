"""The demo reports one timing per row, all by the same clock, and says they are the reference's, not the kernels'."""
from comfyui_vorta.vorta import demo


def test_demo_reports_one_timing_per_configuration_and_says_what_it_times(capsys):
    assert demo.main(["--grid", "3", "5", "6", "--heads", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith(("all: ", "router: "))]
    assert len(rows) == 4
    for line in rows:
        float(line.split()[-1])  # every row ends with its own time
    assert not any("took" in line for line in out)  # no second, different timing of full attention
    assert "PyTorch reference branches on cpu (the oracle), not the Triton kernels" in out[-1]
