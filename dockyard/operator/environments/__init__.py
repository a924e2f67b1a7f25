"""The Environment room: its reconcile passes, its status, its Events and its deletion.

``status`` computes what an environment reports from what was observed and
``protection`` what its Backups and RestoreDrills say of it (both pure);
``reconciler`` runs the passes that observe and change the world, and
``announcements`` says in Events what a pass changed; ``deletion`` applies the
database's deletionPolicy when an environment goes away, with ``snapshots`` (pure)
building and judging the final Backup of deletionPolicy Snapshot; ``defaults`` gives a
production environment its default BackupSchedule and RestoreDrill. The Kopf handlers
in ``dockyard.operator.handlers.environments`` only route events to them.
"""
