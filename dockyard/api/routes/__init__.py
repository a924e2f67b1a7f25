"""Route modules, one per resource; each declares its operations in the registry."""
