"""Pure builders: a validated InferenceService spec → the child manifests (plain dicts).

Nothing here talks to Kubernetes or imports kopf or the client (an import-linter contract in
.importlinter enforces it), so every child is unit-testable and ``tandem render`` works offline.
"""

from tandem.render.children import build_children
from tandem.render.meta import Owner

__all__ = ["Owner", "build_children"]
