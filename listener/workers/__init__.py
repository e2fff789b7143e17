"""The worker threads that talk to the outside for the loop (supervisord's XML-RPC, its logs, the
dead man's switch, lookout's own actions), each posting back through the wakeup pipe."""
