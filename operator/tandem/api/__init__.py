"""The InferenceService API: pydantic models that are also the CRD's single source of truth."""
