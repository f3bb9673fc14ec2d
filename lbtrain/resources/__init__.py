"""The custom resources (ModelRun, TrainingTemplate): names, pydantic models, constants."""
