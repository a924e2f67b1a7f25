"""The Kopf operator: thin handlers by kind, pure builders of desired state, runners."""
