"""The live risk engine: snapshots on every mark change (monitor), and the tiered actions
that de-risk and liquidate sub-accounts (enforce). The math it uses is pure, in pms.risk."""
