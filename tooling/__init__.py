"""Offline tooling around the program: Pulumi mocks, the offline render, the CLI guard and the
state-bucket tool. Nothing under infra/ imports from here."""
