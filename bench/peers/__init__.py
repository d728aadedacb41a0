"""bench.peers — the processes a scenario runs: postgate, Postfix, Dovecot, NSD, smtp-sink."""
