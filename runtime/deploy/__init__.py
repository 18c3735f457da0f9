"""The workstation's side of deploy: device profiles and the fit check, the SSH (or local)
transport, shipping a bundle to many devices with canaries and waves, and the per-host summary.

It runs ``edgetool target`` on each device (:mod:`..target`) and reads its JSON replies, so it
imports nothing of the device side but the status text; it is torch-free, so a device can deploy
to others.
"""
