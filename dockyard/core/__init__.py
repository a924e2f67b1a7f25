"""What the API and the operator share: settings, CR models, Kubernetes and database access."""
