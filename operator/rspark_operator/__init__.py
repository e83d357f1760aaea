"""rspark-operator: durable RStudio + Spark workspaces on Kubernetes."""

__version__ = "0.1.0"
