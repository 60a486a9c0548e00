"""Dockyard: a Kubernetes-native MLOps operator (data -> training -> registry -> A/B serving)."""

__version__ = "0.1.0"
