"""Dockyard events from the operator: each kind's transitions, read from the status it
persisted, logged once by their stable id (``dockyard.core.transitions``, ``emitter``)."""
