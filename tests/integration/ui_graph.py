"""UI-format workflows read the way ComfyUI's graph editor reads them: which inputs are widgets, in what order their
values are saved, and the API-format prompt the editor queues for a graph."""
from __future__ import annotations

from typing import Dict, List, Tuple

FRONTEND_ONLY = {"Note", "MarkdownNote"}
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
CONTROL = "control_after_generate"


def widgets(input_types: dict) -> List[Tuple[str, tuple]]:
    """``(name, spec)`` of each widget in saved order, from a node's ``INPUT_TYPES()`` or its ``/object_info``
    entry's ``input``; a seed's control widget follows it as ``control_after_generate``."""
    out = []
    for section in ("required", "optional"):
        for name, value in input_types.get(section, {}).items():
            t = value[0]
            if isinstance(t, list) or t in WIDGET_TYPES:
                out.append((name, tuple(value)))
                opts = value[1] if len(value) > 1 else {}
                if name == "seed" or opts.get(CONTROL):
                    out.append((CONTROL, (["fixed", "increment", "decrement", "randomize"],)))
    return out


def api_prompt(workflow: dict, object_info: Dict[str, dict]) -> Dict[str, dict]:
    """The API-format prompt for a UI-format workflow: each node's widget values by input name, each linked input as
    ``[source node id, output slot]``; frontend-only nodes (notes) left out."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for n in workflow["nodes"]:
        if n["type"] in FRONTEND_ONLY:
            continue
        names = [name for name, _ in widgets(object_info[n["type"]]["input"])]
        values = n.get("widgets_values", [])
        assert len(names) == len(values), (n["type"], names, values)
        inputs = {name: v for name, v in zip(names, values) if name != CONTROL}
        for inp in n["inputs"]:
            if inp["link"] is not None:
                link = links[inp["link"]]
                inputs[inp["name"]] = [str(link[1]), link[2]]
        prompt[str(n["id"])] = {"class_type": n["type"], "inputs": inputs}
    return prompt
