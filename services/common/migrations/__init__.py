"""The core's own tables (outbox, inbox, request ids), migrated into every service's schema."""
