"""Custom socket types shared by the nodes."""
from comfy_api.latest import io

Router = io.Custom("VORTA_ROUTER")
GeometrySettings = io.Custom("VORTA_SETTINGS")
CATEGORY = "vorta"
