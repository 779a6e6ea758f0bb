"""Icinga 2's REST API as statesync speaks it: one client, below both the guard and the
enrolment. The guard's restart trigger asks Icinga 2 to restart; the enrolment stages config
packages and reads Endpoint and Zone objects. Both need the same things done the same way:
the server's certificate verified against a given CA and host name, and accepted although
Icinga's certificates carry no key identifiers; one keep-alive connection; basic auth whose
password never shows; JSON bodies; and failures turned into statesync's errors. This package
owns exactly that and imports nothing of statesync but the base.
"""
