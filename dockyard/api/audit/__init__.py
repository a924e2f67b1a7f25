"""The audit trail: who did what to which object, and how it ended, kept in Postgres.

The ``audit_events`` table (migration 0001, append-only by trigger) and everything that
reads or writes it, one module each:

- ``events``: a row (``AuditEvent``), a page of rows, the page cursor, and ``Outcome``;
- ``repository``: ``AuditLog``, one INSERT per event, keyset-paged listing, the purge;
- ``diff``: ``spec_diff``, the change map that handlers of updates put in
  ``request[keys.AUDIT]``;
- ``middleware``: ``audit_trail``, which records every mutating request and every
  request denied with 401 or 403;
- ``retention``: the ``cleanup_ctx`` task that purges rows past the retention period.

Outcomes, one per row:

- ``succeeded``: the request was answered with a status below 400;
- ``denied``: it was refused with 401 (no valid token) or 403 (RBAC said no), whether by
  our own TokenReview/SubjectAccessReview or by the kube-apiserver for a write made as
  the caller;
- ``failed``: it was not refused but did not succeed: any other status of 400 or more,
  or an unexpected error (then ``status_code`` is null; the client got 500 or 503), or
  a cancellation before the caller was authenticated;
- ``allowed``: an authenticated request that never got an answer because it was
  cancelled (server stopping, client gone); the change may or may not have been
  applied, so whoever reads the trail should look at the object itself.
"""
