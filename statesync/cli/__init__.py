"""The command layer: ``statesync COMMAND``, thin by design.

Each command is a module of its own holding its action and its printing (``backup``,
``restore``, ``ca``, ...); the packages below return data and print nothing. ``parsers``
builds one parser per command from parent parsers grouped by concern, so each command takes
only the flags it uses; ``main`` loads the config (defaults, file, environment, flags), calls
one action and maps every error to its exit code in one place (``errors.exit_code_for``).
``demo`` runs the whole story on a throwaway Consul dev agent and ``progress`` shows backup,
restore and verify moving files: tqdm's bar on a terminal, one summary line either way.
"""
