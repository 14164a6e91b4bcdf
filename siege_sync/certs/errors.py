"""The one exception of the mesh PKI.

Owns ``CertError``: every operator mistake or unusable file in ``siege_sync.certs`` is raised
as one, with a message that says what is wrong and what to do about it.

Must never carry key material or a certificate body in its message.
"""

from __future__ import annotations


class CertError(Exception):
    """A PKI operation cannot go on; ``str(error)`` says what is wrong and what to do."""
