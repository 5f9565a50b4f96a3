"""V3 nodes of the pack. Each nodes_*.py module exports NODES; the extension in ../__init__.py lists them all."""


def all_nodes():
    from . import nodes_adaptive, nodes_latent, nodes_loaders, nodes_sampling, nodes_scenes, nodes_text
    from . import nodes_regions
    modules = [nodes_loaders, nodes_latent, nodes_text, nodes_sampling, nodes_adaptive, nodes_scenes]
    modules.append(nodes_regions)
    from . import nodes_control
    modules.append(nodes_control)
    return [node for module in modules for node in module.NODES]
