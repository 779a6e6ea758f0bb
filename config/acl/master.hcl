# Consul ACL policy for statesync on an Icinga 2 master (Consul 1.8 rule syntax).
# Placeholders, replaced before the policy is created (see README.md):
#   NODE   the statesync node name (--node; default: the host name)
#   AGENT  the node name of the Consul agent the sidecar talks to (sessions live there)
# The KV prefix is statesync's default; change statesync/icinga2 if yours differs.

# Its own head, snapshots, chunks and gc record: read and write. No other node's.
key_prefix "statesync/icinga2/nodes/NODE/" {
  policy = "write"
}

# The published CA certificate that the satellites read.
key "statesync/icinga2/ca" {
  policy = "write"
}

# The CAs published before (written when a publication replaces one) and the pending
# operator decision of `statesync accept-ca` (consumed when it is published).
key "statesync/icinga2/ca-history" {
  policy = "write"
}
key "statesync/icinga2/ca-accept" {
  policy = "write"
}

# The satellites' enrolment registrations: read all of them (a blocking, recursive read),
# never write one. To un-accept a satellite an operator deletes its key, with a
# management token or one made from operator-satellites.hcl.
key_prefix "statesync/icinga2/satellites/" {
  policy = "read"
}

# Session locks: one writer per node. A session is registered on the agent's node.
session "AGENT" {
  policy = "write"
}
