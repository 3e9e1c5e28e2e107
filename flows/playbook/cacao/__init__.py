"""CACAO 2.0: export stanch playbooks, import CACAO playbooks, validate CACAO documents."""
