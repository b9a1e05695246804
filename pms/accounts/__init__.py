"""Sub-accounts and their ledger: the first capability, and the base every booking stands on."""
