"""The edged application: daemon, recording pipeline, control socket, alerts, self-test, metrics,
diagnostics, data-directory lock and process set-up."""
