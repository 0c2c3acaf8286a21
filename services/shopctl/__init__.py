"""shopctl, the operator CLI of the mesh (DESIGN "The operator CLI"; docs/operations.md)."""
