"""Value types shared by every subsystem: decimals, enums, symbols, instruments."""
