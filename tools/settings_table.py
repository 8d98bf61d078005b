"""Print the README's settings table from the setting declarations (``vorta/comfy/setting_specs.py``).

    python tools/settings_table.py --write    # replace the table between the README's markers

``tests/test_setting_specs.py`` checks that the README holds exactly this table.  Not shipped (``.comfyignore``).
"""
from __future__ import annotations

import pathlib
import sys

from comfyui_vorta.vorta.comfy.setting_specs import APPLY, CALIBRATE, GEOMETRY, SettingSpec

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- settings table: tools/settings_table.py -->", "<!-- end of settings table -->"


def _range(s: SettingSpec) -> str:
    if s.kind == "combo":
        return " / ".join(f"`{o}`" for o in s.options)
    if s.kind == "int":
        return f"{s.low} – {s.high}"
    if s.kind == "float":
        return f"{s.low:g} – {s.high:g}"
    if s.kind == "bool":
        return "on / off"
    return "text"


def table() -> str:
    rows = ["| node | input | default | values | what it does |", "|---|---|---|---|---|"]
    # VORTA Calibrate Router: its own inputs; its tile/window/bucket/ratio are VORTA Settings' (listed once)
    calibrate = [s for s in CALIBRATE if s not in GEOMETRY]
    for node, specs in (("Apply VORTA", APPLY), ("VORTA Settings", GEOMETRY), ("VORTA Calibrate Router", calibrate)):
        for s in specs:
            default = f"`{s.default}`" if s.default != "" else "(empty)"
            if s.kind == "bool":
                default = "on" if s.default else "off"
            rows.append(f"| {node} | `{s.name}` | {default} | {_range(s)} | {s.tooltip} |")
    return "\n".join(rows)


def readme_with_table(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        README.write_text(readme_with_table(README.read_text()))
    else:
        print(table())
