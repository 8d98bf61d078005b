"""Custom socket types shared by the nodes."""
from comfy_api.latest import io

Router = io.Custom("VORTA_ROUTER")
CATEGORY = "vorta"
