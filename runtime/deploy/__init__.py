"""Deploy: device profiles and fit check, signed bundles, the device-side installer, SSH transport.

The device side keeps every version in ``ROOT/versions/<version>``, receives a new one in
``ROOT/staging/<version>``, verifies it there (signature, then every checksum), and only then
switches the ``ROOT/current`` link atomically; the previous version stays for rollback.
"""
