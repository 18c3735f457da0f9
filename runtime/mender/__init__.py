"""Bundles through Mender: a bundle as a Mender artifact (:mod:`.artifact`), and the update module
``edgetool-bundle`` that installs one on a device with the device side of deploy (:mod:`.module`)."""
