"""dns — asynchronous, cached DNS lookups in mail terms (see dns.resolver)."""

from postgate.dns.resolver import DnsError, MxRecord, Resolver, canonical_name

__all__ = ["DnsError", "MxRecord", "Resolver", "canonical_name"]
