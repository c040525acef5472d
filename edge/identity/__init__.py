"""The unit's identity: its signing key and key file names, enrolment (keys, CSRs, certificates),
and the evidence-signing certificate profile."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.lazyexports import lazy_exports

if TYPE_CHECKING:
    from edge.identity.enrolment import certificate_status as certificate_status
    from edge.identity.enrolment import read_certificate_status as read_certificate_status
    from edge.identity.enrolment import signing_certificate_status as signing_certificate_status
    from edge.identity.unitkeys import CA_CHAIN_NAME as CA_CHAIN_NAME
    from edge.identity.unitkeys import SIGNING_CERT_NAME as SIGNING_CERT_NAME
    from edge.identity.unitkeys import SIGNING_PUB_NAME as SIGNING_PUB_NAME
    from edge.identity.unitkeys import TLS_CERT_NAME as TLS_CERT_NAME
    from edge.identity.unitkeys import TLS_KEY_NAME as TLS_KEY_NAME
    from edge.identity.unitkeys import key_id as key_id
    from edge.identity.unitkeys import keys_dir_of as keys_dir_of
    from edge.identity.unitkeys import load_or_create_signing_key as load_or_create_signing_key
    from edge.identity.unitkeys import load_public_pem as load_public_pem
    from edge.identity.unitkeys import load_signing_key as load_signing_key
    from edge.identity.unitkeys import load_signing_public_key as load_signing_public_key
    from edge.identity.unitkeys import public_pem as public_pem
    from edge.identity.unitkeys import public_raw as public_raw
    from edge.identity.unitkeys import refuse_private_material as refuse_private_material

#: public name -> the module defining it (imported on first use)
_EXPORTS = {
    "CA_CHAIN_NAME": "unitkeys",
    "SIGNING_CERT_NAME": "unitkeys",
    "SIGNING_PUB_NAME": "unitkeys",
    "TLS_CERT_NAME": "unitkeys",
    "TLS_KEY_NAME": "unitkeys",
    "certificate_status": "enrolment",
    "key_id": "unitkeys",
    "keys_dir_of": "unitkeys",
    "load_or_create_signing_key": "unitkeys",
    "load_public_pem": "unitkeys",
    "load_signing_key": "unitkeys",
    "load_signing_public_key": "unitkeys",
    "public_pem": "unitkeys",
    "public_raw": "unitkeys",
    "read_certificate_status": "enrolment",
    "refuse_private_material": "unitkeys",
    "signing_certificate_status": "enrolment",
}
__all__ = [
    "CA_CHAIN_NAME",
    "SIGNING_CERT_NAME",
    "SIGNING_PUB_NAME",
    "TLS_CERT_NAME",
    "TLS_KEY_NAME",
    "certificate_status",
    "key_id",
    "keys_dir_of",
    "load_or_create_signing_key",
    "load_public_pem",
    "load_signing_key",
    "load_signing_public_key",
    "public_pem",
    "public_raw",
    "read_certificate_status",
    "refuse_private_material",
    "signing_certificate_status",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
