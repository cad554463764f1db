"""The process: configuration, listeners, signals, and wiring of the parts."""
