"""ComfyUI-F1: the F.1 text-to-image stages as ComfyUI nodes, registered as one V3 extension.

ComfyUI imports are deferred to the entry point, so `f1core` and the tests can import this folder without ComfyUI."""

WEB_DIRECTORY = "./web"  # a frontend extension that shows the nodes' text results on the nodes


async def comfy_entrypoint():
    from comfy_api.latest import ComfyExtension

    from .nodes import all_nodes

    class F1Extension(ComfyExtension):
        async def get_node_list(self):
            return all_nodes()

    return F1Extension()
