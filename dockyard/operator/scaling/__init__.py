"""The ScalingPolicy room: how a policy is reconciled into a HorizontalPodAutoscaler.

``decisions`` says whether a policy is accepted (one per environment, the oldest wins)
and whether it is paused (by its spec, or while a Restore targets the environment),
``status`` what the policy reports and announces; both are pure, as are the builders
of its HPA and of its schedule windows (``dockyard.operator.builders.scaling`` and
``scaling_windows``). ``reconciler`` runs the passes that observe and change the world,
and ``targets`` is what the Environment reconciler asks so that its Deployment leaves
``spec.replicas`` to the HPA. The Kopf handlers in ``dockyard.operator.handlers.scaling``
only route events here.
"""
