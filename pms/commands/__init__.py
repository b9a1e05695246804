"""Gateway commands: their schemas (validated at the edge) and the runner that gives every
command idempotency by requestId, authorization, error mapping and one result."""
