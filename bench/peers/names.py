"""bench.peers.names — the addresses and names both servers see, in one place.

DESCRIPTION
    The same envelope on both sides: mail from ``SENDER`` (a domain with SPF and
    DMARC records in the bench's NSD, so postgate's inbound checks really evaluate)
    to ``RECIPIENT`` (a real local user of postgate; Postfix, which holds everything,
    accepts it as relayed mail from mynetworks). smtp-source and the bench client
    both greet with ``HELO_NAME``, which has its own SPF record, so the HELO check
    finds an answer too.
"""

SENDER_DOMAIN = "bench-sender.test"
SENDER = f"sender@{SENDER_DOMAIN}"
HELO_NAME = f"client.{SENDER_DOMAIN}"
LOCAL_DOMAIN = "example.test"
RECIPIENT = f"bob@{LOCAL_DOMAIN}"
PASSWORD = "bench-password-7Qw2"
REMOTE_DOMAIN = "sink.test"
REMOTE_RECIPIENT = f"bob@{REMOTE_DOMAIN}"
SERVER_HOSTNAME = "mx.example.test"
SPF_RECORD = '"v=spf1 ip4:127.0.0.0/8 -all"'
DMARC_RECORD = '"v=DMARC1; p=none"'
