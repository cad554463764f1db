"""Channels: turning notifications into requests to destinations."""
