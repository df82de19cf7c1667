"""Profiles: one person's identities, traits, activity, orders; export and erasure (PIPL)."""
