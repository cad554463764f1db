"""State that must survive a crash: alerts, transitions, the outbox."""
