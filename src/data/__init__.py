"""Data: synthetic bins, ABID preparation, the DataModule and the one preprocessing definition."""
