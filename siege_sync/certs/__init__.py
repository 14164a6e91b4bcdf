"""The mesh PKI and ``siege-certs``. Knows nothing about sync; nothing here yet."""
