"""``kubectl dockyard``: the kubectl plugin for the flows a platform engineer or an operator
runs by hand (status at a glance, a backup now, restore plan → approve → wait, a drill
now), talking to the apiserver with the kubeconfig as kubectl does. See
``docs/kubectl-plugin.md``.
"""
