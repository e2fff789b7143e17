"""Health probes: I/O on worker threads, whose results go back to the loop like the watcher's.

    target.py     which process a probe looks at, and its placeholders ({pid}, {port}, ...)
    checks.py     one function per kind: http, tcp, exec, heartbeat, log_silence, log_pattern,
                  memory, cpu, fds; each returns a ProbeResult and never raises
    scheduler.py  ProbeScheduler: runs each probe every `period` while its process is RUNNING
                  and past initial_delay, never two at once for one probe and process, each
                  at a fixed offset in its period

Their I/O ends on time through lookout/bounded.py (commands, HTTP and TCP under one deadline,
log reading under a byte budget and across rotation). Deciding what a result means (thresholds,
grace, budgets) is the rules' job (rules/health.py).
"""
