"""Memory task: extract one fact to remember; embed texts for recall."""
