"""Development tooling: the local cluster, its volume provisioner and S3 server, and `make dev`.

Not part of the operator's package: tests, benchmarks and the Makefile use it."""
