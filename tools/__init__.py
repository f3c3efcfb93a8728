"""Developer tools: model import, dlib peer pipeline, template fitting."""
