# Consul ACL policy for an operator managing satellite enrolment (Consul 1.8 rule syntax):
# list, read and delete the registrations under statesync/icinga2/satellites/, for example
# `consul kv delete statesync/icinga2/satellites/sat1` to un-accept satellite sat1.
# No placeholders. Nothing else: no node's snapshots, no CA key, no session.
# The KV prefix is statesync's default; change statesync/icinga2 if yours differs.

key_prefix "statesync/icinga2/satellites/" {
  policy = "write"
}
