"""The device side of deploy (``edgetool target``): a deploy root, receiving a version, checking
it, switching to it, rolling back, trusting keys, and the systemd unit that serves it.

The device keeps every version in ``ROOT/versions/<version>``, receives a new one in
``ROOT/staging/<version>``, verifies it there (signature, then every checksum), and only then
switches the ``ROOT/current`` link atomically; the previous version stays for rollback.
"""
