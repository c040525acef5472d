"""802.1X EAP-TLS authentication of the unit's wired uplink port (ANSSI/CNPP R19).

wpa_supplicant does the protocol work; this package renders its configuration
(:mod:`.supplicant_conf`), talks to its control socket (:mod:`.ctrl`), interprets what it says
(:mod:`.status`, pure) and supervises it from ``edged`` (:mod:`.supervisor`). The uplink gate
(:mod:`edge.uplink.gate`) opens only while the supervisor sees the port authorised.
"""
