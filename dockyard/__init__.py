"""Dockyard: Kubernetes-native environments, their PostgreSQL databases, backups and drills."""

__version__ = "0.1.0"
