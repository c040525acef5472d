"""Deployment files of cluster mode, shipped with the package: the HAProxy configuration (the
one ``edge.csu.lab`` and the cluster tests run) and the receivers' systemd unit."""
