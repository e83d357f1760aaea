"""rspark-operator: durable RStudio + Spark workspaces on Kubernetes."""
