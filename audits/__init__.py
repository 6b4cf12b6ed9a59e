"""Privacy audits against trained models (membership inference, canaries,
empirical epsilon lower bounds). Depends on `securediff`; nothing in the core
depends on it."""
