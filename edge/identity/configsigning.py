"""The configuration-signing certificate profile and its path check (pure).

The city signs the configuration documents its units apply (``edge/signedconfig.py``) with a
key of its own, certified by the city's video CA with this profile: an ECDSA P-256 key,
keyUsage digitalSignature only, and one extended key usage, :data:`CONFIG_SIGNING`, that no
other certificate of the CA carries. A unit's TLS, server or evidence certificate can
therefore never pass for the city's configuration signer, nor this one for any of them.

``CONFIG_SIGNING`` is an OID under the ``2.25`` arc (a UUID as an integer, ITU-T X.667): it
needs no registration and cannot collide with a registered purpose.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from edge.identity import pki

CONFIG_SIGNING = ObjectIdentifier("2.25.230817512066135911377227003530385046722")
"""Extended key usage of the city's configuration-signing certificate."""

_FORBIDDEN_EKUS = {
    ExtendedKeyUsageOID.SERVER_AUTH,
    ExtendedKeyUsageOID.CLIENT_AUTH,
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    ObjectIdentifier("1.3.6.1.5.5.7.3.36"),  # documentSigning: the units' evidence profile
}


def key_usage() -> x509.KeyUsage:
    """digitalSignature, nothing else."""
    return pki.key_usage(digital_signature=True)


def signer_name(cert: x509.Certificate) -> str:
    """The signer as the audit log names it: its common name and serial number."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(cns[0].value) if cns else "?"
    return f"{name} (serial {cert.serial_number:x})"


def profile_problem(cert: x509.Certificate) -> str | None:
    """Why ``cert`` is not a configuration-signing certificate, or None when it is one."""
    if not isinstance(cert.public_key(), ec.EllipticCurvePublicKey):
        return "its key is not ECDSA (an evidence or other certificate)"
    problem, ekus = pki.signing_leaf_problem(
        cert, no_eku=": it is not the city's configuration signer"
    )
    if problem is not None:
        return problem
    if CONFIG_SIGNING not in ekus:
        return "its extendedKeyUsage is not configuration signing"
    if ekus & _FORBIDDEN_EKUS:
        return "it also allows TLS or evidence signing"
    return None


def chain_problem(
    chain: Sequence[x509.Certificate], ca_certs: Sequence[x509.Certificate], at: dt.datetime
) -> str | None:
    """Why ``chain`` (signer first) is not a configuration signer under a root of
    ``ca_certs`` at ``at``; None when it is. Only self-signed certificates of ``ca_certs`` are
    trust anchors; the rest of both lists serve as intermediates."""
    if not chain:
        return "no signer certificate"
    leaf = chain[0]
    problem = profile_problem(leaf)
    if problem is not None:
        return f"the signer's certificate is not a configuration-signing one: {problem}"
    roots, ca_inter = pki.anchors(ca_certs)
    if not roots:
        return "the unit's CA file holds no root (self-signed) certificate"
    problem = pki.verify_path(leaf, [*chain[1:], *ca_inter], roots, at, profile_problem)
    if problem is not None:
        return f"the signer's certificate does not chain to the city's CA: {problem}"
    return None
