"""Amazon SageMaker: the launcher (request building, actions) and the in-container entry shim."""
