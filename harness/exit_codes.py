"""The command's exit codes, in one place: 0 all done, 1 some jobs failed, 2 bad input
(one line on stderr, nothing written), 130 interrupted (Ctrl-C, SIGTERM)."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
