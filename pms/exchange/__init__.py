"""Exchange adapters (ccxt for REST, websockets for streams)."""
