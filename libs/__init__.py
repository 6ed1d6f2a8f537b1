"""Libraries shared by the workflows, the service and the tests."""
