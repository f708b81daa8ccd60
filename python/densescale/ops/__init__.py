"""Ops: launchers, autograd Functions, plain-torch references and backend dispatch (one op a file)."""
