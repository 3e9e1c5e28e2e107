"""The tamper-evident ledger of executed actions and decisions (in progress)."""
