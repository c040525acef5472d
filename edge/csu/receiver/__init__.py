"""The CSU receiver (``edge-csu serve``): units push sealed segments, envelopes and events over
mutual TLS 1.3; operators watch HLS decrypted in memory; every viewing is audited.

``config`` (its own schema), ``registry`` (enrolled units, CRL, TLS contexts), ``store``
(verified segments per unit / camera / sequence), ``server`` (the units' HTTP API), ``hls``
(operators' video), ``audit`` (who watched what), ``mqtt`` (event publishing). The protocol
itself is shared with the unit's client in :mod:`edge.uplink.protocol`; docs/UPLINK.md.
"""
