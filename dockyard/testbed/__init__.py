"""The local test bed: a real Kubernetes control plane, PostgreSQL and Redis on loopback.

``make dev`` and the integration tests both stand on it. The control-plane binaries
are built once from the Go module proxy and cached; see ``docs/testbed.md``.
"""
