"""End-to-end tests: the real Pulumi CLI and provider against a local Kubernetes control plane."""
