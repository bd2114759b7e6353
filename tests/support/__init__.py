"""Helpers shared by the test shelves (imported as ``support.<module>``)."""
