"""dkim — DKIM keys (generate, store, rotate by selector schedule), signing and
verification on top of dkimpy, and the DNS TXT record each key needs.

Modules: keys (the store), rotation (life-cycle state machine), manager (keygen,
rotation against DNS), signer, verify, txt (key records).
"""
