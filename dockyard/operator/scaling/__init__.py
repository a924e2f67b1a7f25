"""How a ScalingPolicy is reconciled into a HorizontalPodAutoscaler.

``schedules`` says which scheduled window is open at an instant, ``decisions`` whether a
policy is accepted (one per environment, the oldest wins) and whether it is paused (by
its spec, or while a Restore targets the environment), ``status`` what the policy
reports; all three are pure. ``reconciler`` runs the passes that observe and change the
world, and ``targets`` is what the Environment reconciler asks so that its Deployment
leaves ``spec.replicas`` to the HPA. The HPA itself is built by
``dockyard.operator.builders.scaling``; the Kopf handlers in
``dockyard.operator.handlers.scaling`` only route events here.
"""
