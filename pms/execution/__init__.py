"""Execution: order intents, the exchange round trip, and the one fill-booking path."""
