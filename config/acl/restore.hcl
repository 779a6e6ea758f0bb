# Consul ACL policy for restoring one node's state with `statesync restore` or
# `statesync snapshots` (Consul 1.8 rule syntax): read only, writes nothing to Consul.
# Placeholder, replaced before the policy is created (see README.md):
#   NODE   the statesync node name whose snapshots may be restored
# The KV prefix is statesync's default; change statesync/icinga2 if yours differs.

key_prefix "statesync/icinga2/nodes/NODE/" {
  policy = "read"
}
