"""The federated run: clients, personalization strategies and the round loop."""
