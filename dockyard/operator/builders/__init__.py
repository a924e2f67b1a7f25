"""Pure builders: a custom resource's spec in, the manifests of its children out.

Nothing here does I/O or reads settings on its own; the reconcilers pass in what the
builders need and apply what they return (``dockyard.operator.apply``), so the whole
desired state of a child can be unit-tested without a cluster.
"""
