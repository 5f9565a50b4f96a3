"""V3 nodes of the pack. Each nodes_*.py module exports NODES; the extension in ../__init__.py lists them all."""


def all_nodes():
    from . import nodes_loaders, nodes_latent, nodes_text, nodes_sampling, nodes_adaptive
    modules = [nodes_loaders, nodes_latent, nodes_text, nodes_sampling, nodes_adaptive]
    return [node for module in modules for node in module.NODES]
