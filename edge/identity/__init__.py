"""The unit's identity: its signing key and key file names, enrolment (keys, CSRs, certificates),
and the evidence-signing certificate profile."""
