"""Pure renderers: a :class:`~tandem.plan.ServicePlan` → the child manifests (plain dicts).

The renderers decide nothing: every value comes from the plan, so a fact is derived once (in
``tandem.plan``) and only copied here. Nothing here talks to Kubernetes or imports kopf or the
client (an import-linter contract in .importlinter enforces it), so every child is
unit-testable and ``tandem render`` works offline.
"""

from tandem.plan.model import Owner
from tandem.render.children import Manifest, build_children, render_children

__all__ = ["Manifest", "Owner", "build_children", "render_children"]
