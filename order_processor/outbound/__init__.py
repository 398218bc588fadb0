"""Everything that talks to an outside system over HTTP: the pooled clients and their transport,
auth flows, immediate retries, the failure taxonomy and redaction of what vendors echo back.
Used by the destinations and by `loyalty_client`; imports neither."""
