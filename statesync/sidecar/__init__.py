"""The long-running sidecar around the engine: ``statesync run``.

``serve`` puts it together: the health server, the start-up (restore or wait, ready marker),
then the daemon with its role's services.
``daemon`` watches the root (watchdog), debounces bursts, commits under the writer lock and
rescans periodically; ``roles`` attaches what a role adds (the master publishes its CA, a
satellite guards it); ``health`` serves /healthz, /readyz and /metrics; ``logs`` sets up
structlog with secrets redacted; ``wiring`` builds the engine's objects from a Config, and
``memory`` hands freed memory back to the OS after a large commit.
"""
