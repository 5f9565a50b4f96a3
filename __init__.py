"""ComfyUI-F1: the F.1 text-to-image stages as ComfyUI nodes. Registers one V3 extension."""
from typing_extensions import override

from comfy_api.latest import ComfyExtension, io


class F1Extension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        from .nodes import all_nodes
        return all_nodes()


async def comfy_entrypoint() -> F1Extension:
    return F1Extension()
