"""The Kindle review rating service (BentoML, HTTP and gRPC); see services/README.md."""
