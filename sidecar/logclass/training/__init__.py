"""Training and evaluation: labelled CSV -> versioned model bundle, and reports on it."""
