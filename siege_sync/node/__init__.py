"""What every site runs: introspection, capture, publishing (and later apply and the service)."""
