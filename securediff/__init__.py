"""securediff: federated, personalized, differentially private diffusion models."""

__version__ = "0.1.0"
