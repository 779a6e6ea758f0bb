# Consul ACL policy for statesync on an Icinga 2 satellite (Consul 1.8 rule syntax).
# Placeholders, replaced before the policy is created (see README.md):
#   NODE          the statesync node name (--node; default: the host name)
#   AGENT         the node name of the Consul agent the sidecar talks to (sessions live there)
#   SATELLITE_CN  the satellite's Icinga 2 certificate name (often the same as the node name)
# The KV prefix is statesync's default; change statesync/icinga2 if yours differs.

# Its own head, snapshots, chunks and gc record: read and write. No other node's,
# so a satellite can read neither a master's snapshots nor its key chunks.
key_prefix "statesync/icinga2/nodes/NODE/" {
  policy = "write"
}

# The published CA certificate, written to certs/ca.crt: read only.
key "statesync/icinga2/ca" {
  policy = "read"
}

# The CAs the fleet trusted before, shown by `statesync check-ca`: read only.
key "statesync/icinga2/ca-history" {
  policy = "read"
}

# Its enrolment registration: this one key, read and write. An exact key, not a prefix:
# a prefix rule for sat1 would also grant sat10. The token is the authority: with it a
# satellite can register under its own certificate name only, and read no other's.
key "statesync/icinga2/satellites/SATELLITE_CN" {
  policy = "write"
}

# Session locks: one writer per node. A session is registered on the agent's node.
session "AGENT" {
  policy = "write"
}
