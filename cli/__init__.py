"""The `assay` command: a client of the public REST API and its Server-Sent Events."""
