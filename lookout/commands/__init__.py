"""The operator's commands of `lookout` (one module each; lookout/cli.py parses and dispatches)."""
