"""Market data for everyone but the streamer: prices with their source and age."""
