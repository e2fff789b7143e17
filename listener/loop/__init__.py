"""The protocol loop: the one thread that owns state (event -> rules -> commit -> ack -> effects),
supervisord's own life as the loop sees it, and degraded mode (the store unwritable)."""
