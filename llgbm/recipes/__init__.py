"""One recipe per stage: only a recipe reads config sections; it sets up, runs and saves."""
