"""statesync: keeps Icinga 2's /var/lib/icinga2 in Consul KV so rebuilt containers keep their CA."""

__version__ = "0.1.0"
