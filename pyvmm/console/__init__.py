"""The guest's console on the host's terminal: output to stdout, stdin into COM1."""
