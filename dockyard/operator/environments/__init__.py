"""How an Environment is reconciled: its database, its children, its status, its deletion.

``status`` computes what an environment reports from what was observed (pure);
``reconciler`` runs the passes that observe and change the world; ``deletion`` applies
the database's deletionPolicy when an environment goes away, with ``snapshots`` (pure)
building and judging the final Backup of deletionPolicy Snapshot. The Kopf handlers in
``dockyard.operator.handlers.environments`` only route events to them.
"""
