"""dnsrecords — the DNS records a mail domain needs for this server (records) and
the checker that compares them with what is published (check, spf)."""
