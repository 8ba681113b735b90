"""The thin kopf layer: handlers, server-side apply of children, status roll-up."""
